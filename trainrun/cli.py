"""The ``trainrun`` command: run the service (embedded or as separate production processes),
and talk to a running one (submit, jobs, show, watch, curves, cancel, diagnose)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

from trainrun import cli_client
from trainrun.settings import Settings, get_settings

log = logging.getLogger("trainrun")
DRAIN_SECONDS = 30


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_format == "json":
        from trainrun.logs import use_json_logs

        use_json_logs()


def _serve_api(host: str, port: int, settings: Settings) -> None:
    import uvicorn

    from api.main import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Ctrl-C or SIGTERM: finish in-flight requests and return (uvicorn would re-raise
            # the signal afterwards, which turns a clean stop into a KeyboardInterrupt).
            def handle(signum: int, frame: object) -> None:
                if self.should_exit:
                    self.force_exit = True
                self.should_exit = True

            previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        # JSON logs: uvicorn's records go through the root handler instead of its own.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    Server(config).run()


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from trainrun.db import migrate

    if args.action == "upgrade":
        migrate.upgrade(settings, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(settings, args.revision or "-1")
    print(f"database at {args.action} {args.revision or ''}".rstrip())
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    _serve_api(args.host, args.port, settings)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.celery_app import app

    argv = [
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(args.concurrency),
        "--queues",
        settings.queue_name,
        "--loglevel",
        settings.log_level.upper(),
        "--hostname",
        f"trainrun-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def cmd_reaper(args: argparse.Namespace, settings: Settings) -> int:
    from worker.celery_app import make_celery
    from worker.reaper import run_reaper

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        run_reaper(settings, make_celery(settings), stop)
    return 0


def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from worker.webhooks import run_dispatcher

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        run_dispatcher(settings, stop)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded mode: migrations, one worker process, and the API, all under ``home``."""
    from trainrun.db import migrate

    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TRAINRUN_HOME": str(home)}
    os.environ["TRAINRUN_HOME"] = str(home)
    migrate.upgrade(settings)
    log.info("embedded mode: state under %s, database %s", home, settings.resolved_database_url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "trainrun", "worker"], env=env, start_new_session=True
    )
    try:
        _serve_api(args.host, args.port, settings)
    finally:
        _stop_worker(worker)
    return 0


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group: running jobs are handed back to the queue."""
    if worker.poll() is not None:
        return
    log.info("stopping the worker (pid %s)", worker.pid)
    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop within %ss; killing it", DRAIN_SECONDS)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    except ProcessLookupError:
        pass


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from trainrun.db.engine import make_engine, make_sessionmaker, transaction
    from trainrun.db.tokens import create_token, revoke_owner_tokens

    engine = make_engine(settings)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            if args.action == "create":
                token = create_token(session, args.owner, name=args.name, admin=args.admin)
                print(token)
                print(
                    f"token for owner '{args.owner}'{' (admin)' if args.admin else ''}; "
                    "it is shown only once",
                    file=sys.stderr,
                )
            else:
                count = revoke_owner_tokens(session, args.owner)
                print(f"revoked {count} token(s) of owner '{args.owner}'", file=sys.stderr)
    finally:
        engine.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainrun", description=__doc__)
    cli_client.add_global_options(parser, in_subcommand=False)
    sub = parser.add_subparsers(dest="command", required=True)
    cli_client.add_client_commands(sub)

    serve = sub.add_parser("serve", help="embedded mode: API + one worker, SQLite under ./var")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    api = sub.add_parser("api", help="the HTTP API alone (production)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="a Celery worker (production: one per GPU)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1)")
    worker.set_defaults(func=cmd_worker)

    reaper = sub.add_parser("reaper", help="re-queue jobs of dead workers, re-send lost messages")
    reaper.set_defaults(func=cmd_reaper)

    webhooks = sub.add_parser("webhooks", help="send webhook deliveries (workers do it too)")
    webhooks.set_defaults(func=cmd_webhooks)

    token = sub.add_parser("token", help="API tokens (only their hashes are stored)")
    token.add_argument("action", choices=["create", "revoke"])
    token.add_argument("--owner", required=True, help="jobs submitted with it belong to this owner")
    token.add_argument("--name", default="", help="a label for the token")
    token.add_argument("--admin", action="store_true", help="sees every owner's jobs")
    token.set_defaults(func=cmd_token)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="default: head (upgrade) or -1 (downgrade)")
    db.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "client_handler"):  # talks to a service: no settings, no log setup
        return cli_client.run(args)
    settings = get_settings()
    _logging(settings)
    return int(args.func(args, settings))
