"""The client commands of ``trainrun``: submit, jobs, show, watch, curves, cancel, diagnose.

They talk to a running service through the SDK (``trainrun.client``). Exit codes: 0 the job
succeeded (or the command did its work), 1 the job failed or timed out, or the call failed,
2 a usage error (a bad spec file, a spec the service rejects), 3 the job was cancelled,
130 detached with Ctrl-C (the job keeps running).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from trainrun.client import (
    ApiError,
    Client,
    ConnectionFailed,
    EpochEvent,
    Job,
    SpecFileError,
    TrainrunClientError,
    ValidationFailed,
)
from trainrun.client._base import DEFAULT_URL

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
STATUS_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "timed_out": EXIT_FAILED}
FOLLOW_PHASES = ("train", "train_eval", "val")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")

Handler = Callable[[Client, argparse.Namespace], int]


def status_exit(status: str) -> int:
    return EXIT_CANCELLED if status == "cancelled" else STATUS_EXIT.get(status, EXIT_FAILED)


def err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Following a job: a rich progress bar on a terminal, one plain line per epoch otherwise.


def phase_summary(event: EpochEvent, phase: str, sep: str) -> str | None:
    loss = event.figure(phase, "loss")
    if phase not in event.phases:
        return None
    parts = [f"loss{sep}{_num(loss)}"]
    accuracy = event.figure(phase, "accuracy")
    if accuracy is not None:
        parts.append(f"acc{sep}{accuracy:.4f}")
    elif event.figure(phase, "r2") is not None:
        parts.append(f"r2{sep}{_num(event.figure(phase, 'r2'))}")
    return f"{phase} " + " ".join(parts)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


class Display(Protocol):
    def epoch(self, event: EpochEvent) -> None: ...
    def close(self) -> None: ...


class PlainDisplay:
    def __init__(self, job: Job) -> None:
        self.total = job.epochs_total

    def epoch(self, event: EpochEvent) -> None:
        figures = [phase_summary(event, p, "=") for p in FOLLOW_PHASES]
        line = "  ".join(f for f in figures if f)
        print(f"epoch {event.epoch}/{self.total}  {line}", flush=True)

    def close(self) -> None:
        pass


class RichDisplay:
    def __init__(self, job: Job) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"),
        )
        self.task = self.progress.add_task(
            f"{job.name} ({job.id[:8]})", total=job.epochs_total, completed=job.epoch, figures=""
        )
        self.progress.start()

    def epoch(self, event: EpochEvent) -> None:
        figures = [phase_summary(event, p, " ") for p in FOLLOW_PHASES]
        text = " | ".join(f for f in figures if f)
        self.progress.update(self.task, completed=event.epoch, figures=text)

    def close(self) -> None:
        self.progress.stop()


def follow(client: Client, job: Job) -> int:
    """Show the job's epochs as they come; the exit code of its final status."""
    display: Display = RichDisplay(job) if sys.stdout.isatty() else PlainDisplay(job)
    try:
        try:
            for event in client.stream(job.id):
                display.epoch(event)
        finally:
            display.close()
        final = client.wait(job.id, timeout=60, poll_interval=0.2)
    except KeyboardInterrupt:
        err(f"\ndetached from job {job.id}; it keeps running. Resume with: trainrun watch {job.id}")
        return EXIT_INTERRUPTED
    print(f"job {final.id} {final.status}" + (f": {final.error}" if final.error else ""))
    return status_exit(final.status)


# Commands


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    job = client.submit(args.spec, idempotency_key=args.idempotency_key)
    if args.json:
        print(job.model_dump_json(indent=2))
    else:
        print(job.id, flush=True)
        err(f"submitted job {job.id} ({job.name}, {job.epochs_total} epochs)")
    return follow(client, job) if args.follow else EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return follow(client, client.get(args.job_id))


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs: Iterable[Job] = client.list(status=args.status, page_size=min(args.limit or 100, 100))
    selected = [j for _, j in zip(range(args.limit), jobs, strict=False)] if args.limit else [*jobs]
    if args.json:
        print(json.dumps([j.model_dump(mode="json") for j in selected], indent=2))
        return EXIT_OK
    rows = [
        (j.id, j.name, j.status, f"{j.epoch}/{j.epochs_total}", f"{j.created_at:%Y-%m-%d %H:%M:%S}")
        for j in selected
    ]
    print_table(("ID", "NAME", "STATUS", "EPOCH", "CREATED"), rows)
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if args.json:
        print(job.model_dump_json(indent=2))
        return EXIT_OK
    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("owner", job.owner),
        ("status", job.status + (" (cancel requested)" if job.cancel_requested else "")),
        ("epoch", f"{job.epoch}/{job.epochs_total}"),
        ("attempt", job.attempt),
        ("parameters", f"{job.parameter_count:,}"),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("duration", None if job.duration_seconds is None else f"{job.duration_seconds:.1f}s"),
        ("worker", job.worker),
        ("error", job.error),
    ]
    for name, value in fields:
        if value is not None:
            print(f"{name + ':':<12}{value}")
    return EXIT_OK


def cmd_curves(client: Client, args: argparse.Namespace) -> int:
    if args.csv:
        write_output(args.csv, client.curves_csv(args.job_id))
        return EXIT_OK
    if args.png:
        Path(args.png).write_bytes(client.curves_png(args.job_id))
        err(f"wrote {args.png}")
        return EXIT_OK
    curves = client.curves(args.job_id)
    rows = curves.rows()
    metrics = list(dict.fromkeys(m for r in rows for m in r if m not in ("epoch", "phase")))
    table = [(r["epoch"], r["phase"], *(_num(r.get(m)) for m in metrics)) for r in rows]
    print_table(("EPOCH", "PHASE", *(m.upper() for m in metrics)), table)
    return EXIT_OK


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.job_id)
    pending = " (it stops after the current batch)" if job.status == "running" else ""
    print(f"job {job.id} {job.status}{pending}")
    return EXIT_OK


def cmd_diagnose(client: Client, args: argparse.Namespace) -> int:
    diagnosis = client.diagnosis(args.job_id)
    if args.json:
        print(diagnosis.model_dump_json(indent=2))
        return EXIT_OK
    print(f"job {diagnosis.job_id} ({diagnosis.status}, epoch {diagnosis.epoch}): ")
    print(diagnosis.summary)
    for finding in diagnosis.findings:
        epochs = ", ".join(str(e) for e in finding.evidence.epochs)
        print(f"\n[{finding.severity}] {finding.title} ({finding.code}; epochs {epochs or '-'})")
        print(f"  {finding.message}")
    return EXIT_OK


def print_table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
    body = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    for row in (header, *body):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def write_output(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)
        err(f"wrote {target}")


# Wiring


def run(args: argparse.Namespace) -> int:
    """Run a client command; map the SDK's errors to messages and exit codes."""
    handler: Handler = args.client_handler
    try:
        with Client(resolve_url(args), args.token) as client:
            return handler(client, args)
    except SpecFileError as exc:
        err(f"error: {exc}")
        return EXIT_USAGE
    except ValidationFailed as exc:
        err("error: the service rejected the spec:")
        for path, error in zip(exc.paths, exc.errors, strict=True):
            err(f"  {path or '<spec>'}: {error.get('msg')}")
        return EXIT_USAGE
    except (ApiError, ConnectionFailed, TrainrunClientError) as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err("interrupted")
        return EXIT_INTERRUPTED


def resolve_url(args: argparse.Namespace) -> str:
    return str(args.url or DEFAULT_URL)


def add_global_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    """``--url`` and ``--token``, before or after the command; env vars as defaults."""
    # After the command, an absent option must not overwrite the one given before it.
    url: Any = argparse.SUPPRESS if in_subcommand else os.environ.get("TRAINRUN_URL")
    token: Any = argparse.SUPPRESS if in_subcommand else os.environ.get("TRAINRUN_TOKEN")
    parser.add_argument(
        "--url", default=url, help=f"the service (env TRAINRUN_URL, default {DEFAULT_URL})"
    )
    parser.add_argument("--token", default=token, help="bearer token (env TRAINRUN_TOKEN)")


def add_client_commands(sub: Any) -> None:
    """Register the client commands on the ``trainrun`` subparsers."""

    def command(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        add_global_options(parser, in_subcommand=True)
        parser.set_defaults(client_handler=handler)
        return parser

    submit = command("submit", cmd_submit, "submit a job spec (YAML or JSON file)")
    submit.add_argument("spec", help="path to the spec file")
    submit.add_argument("--follow", "-f", action="store_true", help="watch it until it ends")
    submit.add_argument("--idempotency-key", help="a retried submit with it returns the same job")
    submit.add_argument("--json", action="store_true", help="print the job as JSON")

    jobs = command("jobs", cmd_jobs, "list jobs, newest first")
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    jobs.add_argument("--json", action="store_true")

    show = command("show", cmd_show, "one job's status")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")

    watch = command("watch", cmd_watch, "follow a job's epochs until it ends")
    watch.add_argument("job_id")

    curves = command("curves", cmd_curves, "a job's per-epoch figures (table, CSV or PNG)")
    curves.add_argument("job_id")
    out = curves.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-': stdout)")
    out.add_argument("--png", metavar="FILE", help="write a PNG plot to FILE")

    cancel = command("cancel", cmd_cancel, "cancel a job (a running one stops between batches)")
    cancel.add_argument("job_id")

    diagnose = command("diagnose", cmd_diagnose, "what the curves say, and why")
    diagnose.add_argument("job_id")
    diagnose.add_argument("--json", action="store_true")

    from trainrun.cli_sweep import add_sweep_commands  # imports this module: import here

    add_sweep_commands(command)
