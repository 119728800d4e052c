"""Service overhead per job in production mode: a real ``trainrun api`` and ``trainrun worker``
on PostgreSQL and Redis. For each job, the time from the POST until its first epoch is stored,
minus the engine's own time for that epoch (the stored ``seconds``). Also the pool child's
peak resident memory (VmHWM) while it trains seed 000's job.

    .venv/bin/python bench/service_overhead.py [--jobs 20]

Uses a fresh database on the local server (TRAINRUN_TEST_PG, an admin URL) and a private Redis
queue (TRAINRUN_TEST_REDIS); both are removed afterwards. Jobs are sent one at a time, each
after the previous one ended, so the worker is idle when the POST arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import Service, free_port, running, service_env, wait_http_ok
from trainrun.db.migrate import upgrade
from trainrun.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get(
    "TRAINRUN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("TRAINRUN_TEST_REDIS", "redis://127.0.0.1:6379/0")


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (through /proc's children lists)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for kid in map(int, kids):
            found += [kid, *children(kid)]
    return found


def status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class PeakWatcher(threading.Thread):
    """Samples every pool child's VmHWM (kernel-kept peak RSS) until stopped."""

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent = parent
        self.peaks: dict[int, int] = {}
        self.seen: dict[int, list[float]] = {}  # pid -> [first, last] wall time seen alive
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for pid in children(self.parent):
                self.seen.setdefault(pid, [now, now])[1] = now
                hwm = status_kb(pid, "VmHWM")
                if hwm is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
            time.sleep(0.05)


def seed000(epochs: int) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples/000_dropout_sine.yaml").read_text())
    spec["training"]["epochs"] = epochs
    return spec


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--gap", type=float, default=5.0, help="idle seconds between jobs")
    parser.add_argument("--keep", action="store_true", help="keep the home with the logs")
    args = parser.parse_args()

    name = f"trainrun_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    home = Path(tempfile.mkdtemp(prefix="trainrun-overhead-"))
    queue = f"trainrun-bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=url, broker_url=REDIS, home=home, queue_name=queue)
    upgrade(settings)
    env = service_env(
        {
            "TRAINRUN_DATABASE_URL": url,
            "TRAINRUN_BROKER_URL": REDIS,
            "TRAINRUN_HOME": str(home),
            "TRAINRUN_QUEUE_NAME": queue,
        }
    )
    db = create_engine(url)
    port = free_port()
    api = Service(["api", "--port", str(port)], env, home / "api.log")
    worker = Service(["worker"], env, home / "worker.log")
    rows: list[dict[str, float]] = []
    parent_kb: int | None = None
    watcher = PeakWatcher(worker.proc.pid)
    try:
        with running(api, worker), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wait_http_ok(f"http://127.0.0.1:{port}/readyz")
            time.sleep(5)  # let the worker's pool child start
            watcher.start()
            for i in range(args.jobs):
                t_post = time.time()
                print(f"POST at {t_post:.2f}", flush=True)
                created = client.post("/v1/jobs", json=seed000(args.epochs))
                t_posted = time.time()
                created.raise_for_status()
                job_id = created.json()["id"]
                first = None
                while first is None:
                    with db.connect() as conn:
                        found = conn.execute(
                            text(
                                "SELECT min(f.created_at), sum(f.seconds), count(*),"
                                " min(j.started_at)"
                                " FROM epoch_figures f JOIN jobs j ON j.id = f.job_id"
                                " WHERE f.job_id = :j AND f.epoch = 1"
                            ),
                            {"j": job_id},
                        ).one()
                    if found[2] >= 3:
                        first = found
                    else:
                        time.sleep(0.01)
                stored, claimed = (
                    t if t.tzinfo else t.replace(tzinfo=UTC) for t in (first[0], first[3])
                )
                to_first = stored.timestamp() - t_post
                overhead = to_first - float(first[1])
                breakdown = {
                    "post_s": t_posted - t_post,  # API: validate, dry-build, insert, doorbell
                    "pickup_s": claimed.timestamp() - t_posted,  # broker, pool child, claim
                    "setup_s": stored.timestamp() - claimed.timestamp() - float(first[1]),
                }
                rows.append(
                    {
                        "to_first_epoch_s": to_first,
                        "engine_s": float(first[1]),
                        "overhead_s": overhead,
                        **breakdown,
                    }
                )
                print(
                    f"job {i + 1}: POST->epoch 1 stored {to_first * 1000:.0f} ms, engine "
                    f"{first[1] * 1000:.0f} ms, overhead {overhead * 1000:.0f} ms "
                    + " ".join(f"{k} {v * 1000:.0f}" for k, v in breakdown.items()),
                    flush=True,
                )
                while client.get(f"/v1/jobs/{job_id}").json()["status"] not in (
                    "succeeded",
                    "failed",
                    "cancelled",
                    "timed_out",
                ):
                    time.sleep(0.1)
                print(f"job ended, seen at {time.time():.2f}", flush=True)
                time.sleep(args.gap)  # idle worker: the next pool child (one job each) is up
            watcher.stop.set()
            watcher.join()
            for pid, (born, gone) in sorted(watcher.seen.items(), key=lambda kv: kv[1][0]):
                print(f"pool child {pid}: alive {born:.2f} .. {gone:.2f}", flush=True)
            parent_kb = status_kb(worker.proc.pid, "VmHWM")
    finally:
        db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    over = [r["overhead_s"] * 1000 for r in rows]
    peaks_mb = sorted(v / 1024 for v in watcher.peaks.values())
    summary = {
        "jobs": len(rows),
        "overhead_ms": {
            "median": statistics.median(over),
            "p95": pct(over, 0.95),
            "min": min(over),
            "max": max(over),
        },
        "to_first_epoch_ms_median": statistics.median(r["to_first_epoch_s"] * 1000 for r in rows),
        "engine_epoch1_ms_median": statistics.median(r["engine_s"] * 1000 for r in rows),
        "breakdown_ms_median": {
            k: statistics.median(r[k] * 1000 for r in rows[1:] or rows)
            for k in ("post_s", "pickup_s", "setup_s")
        },
        "first_job_overhead_ms": over[0],
        "pool_child_vmhwm_mb": {
            "max": max(peaks_mb) if peaks_mb else None,
            "median": statistics.median(peaks_mb) if peaks_mb else None,
            "children_seen": len(peaks_mb),
        },
        "worker_parent_vmhwm_mb": parent_kb / 1024 if parent_kb else None,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    out = REPO / "bench/out/service_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
