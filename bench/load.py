"""Load on a production-shaped service (PostgreSQL + Redis), loopback only, bounded in time.

    .venv/bin/python bench/load.py [--clients 100] [--seconds 60] [--jobs 500] [--workers 2]

Part 1, HTTP load: one real ``trainrun api`` process (it serves one uvicorn process; it has no
``--workers`` option) and ``--clients`` concurrent asyncio + httpx clients, each looping
submit a tiny job / read its curves / read a job list, for ``--seconds``. Baseline side by
side: ``GET /healthz`` at the same concurrency (the floor of this stack and this client).
No worker runs in part 1: its jobs stay queued and are cancelled before part 2.

Part 2, "N small jobs through W workers, each trained exactly once": ``--workers`` real
``trainrun worker`` processes, ``--jobs`` one-epoch iris MLP jobs submitted over HTTP, then
the ``epoch_figures`` table is checked: per job exactly one row per (epoch, phase), every row
of attempt 1, each job claimed once (fence 1) and succeeded. Baseline: the engine's own
training time (the sum of the stored ``seconds``) divided by W, a lower bound on wall time.

A fresh database is created (admin URL from ``TRAINRUN_TEST_PG``) and dropped at the end;
Redis from ``TRAINRUN_TEST_REDIS`` with a private queue. JSON summary: ``bench/out/load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import Service, free_port, iris_spec, service_env, wait_http_ok  # noqa: E402
from trainrun.db.migrate import upgrade  # noqa: E402
from trainrun.settings import Settings  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "TRAINRUN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TRAINRUN_TEST_REDIS", "redis://127.0.0.1:6379/0")
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
UNLIMITED = {  # the benchmark measures the service, not its limits
    "TRAINRUN_LIMIT_REQUESTS_PER_MINUTE": "1000000000",
    "TRAINRUN_LIMIT_REQUEST_BURST": "1000000000",
    "TRAINRUN_LIMIT_MAX_ACTIVE_JOBS_PER_OWNER": "1000000000",
}


@dataclass
class Tally:
    """Latencies (s) of successful requests per operation, and the failures."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)

    def summary(self, wall: float) -> dict[str, Any]:
        every = [x for xs in self.latencies.values() for x in xs]
        out = {"all": _stats(every, wall)}
        out.update({op: _stats(xs, wall) for op, xs in sorted(self.latencies.items())})
        return {"ops": out, "errors": dict(self.errors), "error_count": sum(self.errors.values())}


def _stats(xs: list[float], wall: float) -> dict[str, float]:
    if not xs:
        return {"requests": 0, "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    p99 = statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]
    return {
        "requests": len(xs),
        "rps": len(xs) / wall,
        "p50_ms": 1000 * statistics.median(xs),
        "p99_ms": 1000 * p99,
    }


async def _timed(
    tally: Tally, op: str, call: Callable[[], Awaitable[httpx.Response]], ok: tuple[int, ...]
) -> httpx.Response | None:
    t0 = time.perf_counter()
    try:
        response = await call()
    except httpx.HTTPError as exc:
        tally.errors[f"{op}: {type(exc).__name__}"] += 1
        return None
    if response.status_code not in ok:
        tally.errors[f"{op}: HTTP {response.status_code}"] += 1
        return None
    tally.add(op, time.perf_counter() - t0)
    return response


async def _drive(
    base: str, clients: int, seconds: float, loop_body: Callable[..., Awaitable[None]]
) -> tuple[Tally, float]:
    tally = Tally()
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under us
    # (a request sent on a connection the server is closing fails with ReadError).
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=3.0
    )
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        stop_at = time.monotonic() + seconds

        async def client(i: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                await loop_body(http, tally, i, n)
                n += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return tally, time.perf_counter() - t0


async def _mixed(http: httpx.AsyncClient, tally: Tally, i: int, n: int) -> None:
    spec = iris_spec(name=f"load-{i}-{n}", seed=n)
    created = await _timed(tally, "POST /v1/jobs", lambda: http.post("/v1/jobs", json=spec), (201,))
    if created is not None:
        job_id = created.json()["id"]
        await _timed(tally, "GET curves", lambda: http.get(f"/v1/jobs/{job_id}/curves"), (200,))
    await _timed(tally, "GET /v1/jobs", lambda: http.get("/v1/jobs", params={"limit": 20}), (200,))


async def _health(http: httpx.AsyncClient, tally: Tally, i: int, n: int) -> None:
    await _timed(tally, "GET /healthz", lambda: http.get("/healthz"), (200,))


def http_load(base: str, clients: int, seconds: float, baseline_seconds: float) -> dict[str, Any]:
    load0 = os.getloadavg()
    mixed, mixed_wall = asyncio.run(_drive(base, clients, seconds, _mixed))
    health, health_wall = asyncio.run(_drive(base, clients, baseline_seconds, _health))
    m, h = mixed.summary(mixed_wall), health.summary(health_wall)
    return {
        "clients": clients,
        "mixed": {"wall_s": mixed_wall, **m},
        "healthz": {"wall_s": health_wall, **h},
        "ratio_rps_mixed_over_healthz": m["ops"]["all"]["rps"] / max(h["ops"]["all"]["rps"], 1e-9),
        "ratio_p50_mixed_over_healthz": m["ops"]["all"]["p50_ms"]
        / max(h["ops"]["all"]["p50_ms"], 1e-9),
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
    }


def cancel_queued(engine: Engine, r: redis.Redis, queue: str) -> int:
    """Part 1's jobs must not be trained in part 2: cancel them and empty the queue."""
    with engine.begin() as conn:
        n = conn.execute(
            text(
                "UPDATE jobs SET status = 'cancelled', cancel_requested = true, "
                "finished_at = now() WHERE status = 'queued'"
            )
        ).rowcount
    for key in r.scan_iter(f"{queue}*"):
        r.delete(key)
    return int(n)


def many_jobs(base: str, engine: Engine, jobs: int, workers: int, timeout: float) -> dict[str, Any]:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    ids: list[str] = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(jobs):
            r = http.post("/v1/jobs", json=iris_spec(name=f"many-{i}", seed=i))
            r.raise_for_status()
            ids.append(r.json()["id"])
    submitted = time.perf_counter() - t0
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = int(
                conn.execute(
                    text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = ANY(:final)"),
                    {"ids": ids, "final": list(FINAL)},
                ).scalar_one()
            )
        if done == jobs:
            break
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text("SELECT status, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
                {"ids": ids},
            ).all()
        )
        claims = dict(
            conn.execute(
                text(
                    "SELECT fence::text || '/' || attempt::text, count(*) FROM jobs "
                    "WHERE id = ANY(:ids) GROUP BY 1"
                ),
                {"ids": ids},
            ).all()
        )
        # Per job: rows per (epoch, phase) and the attempts that wrote them.
        dupes = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT job_id, epoch, phase FROM epoch_figures "
                "WHERE job_id = ANY(:ids) GROUP BY 1, 2, 3 HAVING count(*) <> 1) d"
            ),
            {"ids": ids},
        ).scalar_one()
        phases = dict(
            conn.execute(
                text(
                    "SELECT p, count(*) FROM (SELECT job_id, string_agg(epoch::text || ':' || "
                    "phase, ',' ORDER BY epoch, phase) AS p FROM epoch_figures "
                    "WHERE job_id = ANY(:ids) GROUP BY job_id) s GROUP BY p"
                ),
                {"ids": ids},
            ).all()
        )
        attempts = dict(
            conn.execute(
                text(
                    "SELECT attempt, count(*) FROM epoch_figures WHERE job_id = ANY(:ids) "
                    "GROUP BY attempt"
                ),
                {"ids": ids},
            ).all()
        )
        engine_seconds = float(
            conn.execute(
                text(
                    "SELECT coalesce(sum(seconds), 0) FROM epoch_figures WHERE job_id = ANY(:ids)"
                ),
                {"ids": ids},
            ).scalar_one()
        )
        job_seconds = float(
            conn.execute(
                text(
                    "SELECT coalesce(sum(extract(epoch FROM finished_at - started_at)), 0) "
                    "FROM jobs WHERE id = ANY(:ids)"
                ),
                {"ids": ids},
            ).scalar_one()
        )
    exactly_once = (
        done == jobs
        and statuses == {"succeeded": jobs}
        and claims == {"1/1": jobs}
        and dupes == 0
        and attempts == {1: sum(attempts.values())}
        and sum(phases.values()) == jobs
    )
    lower_bound = engine_seconds / workers
    return {
        "jobs": jobs,
        "workers": workers,
        "submit_s": submitted,
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "finished": done,
        "statuses": statuses,
        "fence/attempt per job": claims,
        "duplicate (job, epoch, phase) rows": dupes,
        "figure rows by attempt": {str(k): v for k, v in attempts.items()},
        "phase sets per job": phases,
        "exactly_once": exactly_once,
        "engine_seconds_sum": engine_seconds,
        "job_seconds_sum (started->finished)": job_seconds,
        "lower_bound_s (engine seconds / workers)": lower_bound,
        "ratio_wall_over_lower_bound": wall / max(lower_bound, 1e-9),
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs-timeout", type=float, default=900.0)
    args = parser.parse_args()

    name = f"trainrun_bench_{uuid.uuid4().hex[:10]}"
    queue = f"trainrun-bench-{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = create_engine(url)
    r = redis.Redis.from_url(REDIS_URL)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count()}
    services: list[Service] = []
    try:
        upgrade(Settings(database_url=url))
        with tempfile.TemporaryDirectory(prefix="trainrun-load-") as tmp:
            home = Path(tmp)
            env = service_env(
                UNLIMITED,
                TRAINRUN_HOME=str(home),
                TRAINRUN_DATABASE_URL=url,
                TRAINRUN_BROKER_URL=REDIS_URL,
                TRAINRUN_QUEUE_NAME=queue,
                TRAINRUN_LOG_LEVEL="WARNING",
            )
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            services.append(Service(["api", "--port", str(port)], env, home / "api.log"))
            wait_http_ok(f"{base}/healthz")
            print(f"part 1: {args.clients} clients for {args.seconds:.0f}s ...", flush=True)
            results["http"] = http_load(base, args.clients, args.seconds, args.baseline_seconds)
            results["http"]["cancelled_after"] = cancel_queued(engine, r, queue)
            print(json.dumps(results["http"], indent=1), flush=True)

            for i in range(args.workers):
                services.append(Service(["worker"], env, home / f"worker-{i}.log"))
            time.sleep(5)  # let the workers boot (torch import) before the clock starts
            print(f"part 2: {args.jobs} jobs through {args.workers} workers ...", flush=True)
            results["jobs"] = many_jobs(base, engine, args.jobs, args.workers, args.jobs_timeout)
            print(json.dumps(results["jobs"], indent=1), flush=True)
            for s in reversed(services):
                s.stop()
            logs = {p.name: p.read_text(errors="replace") for p in home.glob("*.log")}
            results["tracebacks_in_logs"] = {k: v.count("Traceback") for k, v in logs.items()}
    finally:
        for s in services:
            s.stop()
        engine.dispose()
        for key in r.scan_iter(f"{queue}*"):
            r.delete(key)
        r.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(results, indent=1, default=str))
    ok = results["http"]["mixed"]["error_count"] == 0 and results["jobs"]["exactly_once"]
    print("OK" if ok else "FAILED: errors or not exactly once", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
