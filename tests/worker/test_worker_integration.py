"""A real ``trainrun worker`` process against the local PostgreSQL and Redis.

Jobs are submitted the way the API does it (row committed, then the doorbell rung) or through
a real ``trainrun api`` process; every outcome is read back from the database.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import settings_env
from tests.support import (
    Service,
    digits_spec,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_for,
    wait_http_ok,
)
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import EpochFigures, Job
from trainrun.settings import Settings
from trainrun.spec import JobSpec
from worker.celery_app import make_celery, send_run_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Snapshot:
    """A job's row and its figures, read in one statement (one consistent view)."""

    status: str
    attempt: int
    error: str | None
    max_epoch: int


@pytest.fixture
def factory(pg_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_settings)
    yield make_sessionmaker(engine)
    engine.dispose()


def fast(settings: Settings) -> Settings:
    """Heartbeats (cancel checks) and reaper sweeps a few times a second."""
    return settings.model_copy(update={"heartbeat_seconds": 0.2, "reaper_interval_seconds": 0.5})


def submit(settings: Settings, factory: sessionmaker[Session], spec: dict[str, Any]) -> str:
    """Insert the job row (committed), without ringing its doorbell."""
    parsed = JobSpec.model_validate(spec)
    with transaction(factory) as session:
        job = queries.create_job(
            session,
            name=parsed.name,
            spec=parsed.model_dump(mode="json"),
            owner="anonymous",
            epochs_total=parsed.training.epochs,
            parameter_count=0,
        )
        return job.id


def ring(settings: Settings, job_id: str, times: int = 1) -> None:
    app = make_celery(settings)
    try:
        for _ in range(times):
            send_run_job(app, job_id)
    finally:
        app.close()


def snapshot(factory: sessionmaker[Session], job_id: str) -> Snapshot:
    max_epoch = (
        select(func.coalesce(func.max(EpochFigures.epoch), 0))
        .where(EpochFigures.job_id == job_id)
        .scalar_subquery()
    )
    with factory() as session:
        row = session.execute(
            select(Job.status, Job.attempt, Job.error, max_epoch).where(Job.id == job_id)
        ).one()
    return Snapshot(row[0], row[1], row[2], row[3])


def figures(factory: sessionmaker[Session], job_id: str) -> list[EpochFigures]:
    with factory() as session:
        return list(queries.figures_for_job(session, job_id))


def wait_status(
    factory: sessionmaker[Session], job_id: str, statuses: set[str], timeout: float = 60.0
) -> Snapshot:
    def reached() -> Snapshot | None:
        snap = snapshot(factory, job_id)
        return snap if snap.status in statuses else None

    return wait_for(reached, timeout, 0.05, f"job {job_id} to be {statuses}")


def wait_training(factory: sessionmaker[Session], job_id: str, epochs: int = 2) -> Snapshot:
    """Until the job is running with at least ``epochs`` epochs stored."""

    def reached() -> Snapshot | None:
        snap = snapshot(factory, job_id)
        assert snap.status in {"queued", "running"}, snap
        return snap if snap.status == "running" and snap.max_epoch >= epochs else None

    return wait_for(reached, 60.0, 0.05, f"job {job_id} to train {epochs} epochs")


def queue_length(settings: Settings) -> int:
    r = redis.Redis.from_url(settings.resolved_broker_url)
    try:
        return int(r.llen(settings.queue_name))
    finally:
        r.close()


def worker(settings: Settings, log: Path, *args: str) -> Service:
    return Service(["worker", *args], service_env(settings_env(settings)), log)


def api(settings: Settings, log: Path) -> tuple[Service, str]:
    port = free_port()
    service = Service(["api", "--port", str(port)], service_env(settings_env(settings)), log)
    return service, f"http://127.0.0.1:{port}"


def test_duplicate_deliveries_train_the_job_once(
    pg_settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = submit(pg_settings, factory, sine_spec(epochs=3))
    ring(pg_settings, job_id, times=2)  # both wait in Redis: two pool children take one each
    w = worker(pg_settings, tmp_path / "worker.log", "--concurrency", "2")
    with running(w):
        snap = wait_status(factory, job_id, {"succeeded", "failed", "cancelled"})
        assert snap.status == "succeeded", (snap, w.log())
        ring(pg_settings, job_id)  # a late redelivery of a finished job
        wait_for(
            lambda: queue_length(pg_settings) == 0 and w.log().count("not claimable") >= 2,
            30,
            0.1,
            "both extra deliveries to be dropped",
        )

    snap = snapshot(factory, job_id)
    assert (snap.status, snap.attempt, snap.max_epoch) == ("succeeded", 1, 3)
    rows = figures(factory, job_id)
    per_key = Counter((r.epoch, r.phase) for r in rows)
    assert all(count == 1 for count in per_key.values()), per_key
    for epoch in (1, 2, 3):
        assert {"train", "train_eval", "val"} <= {p for e, p in per_key if e == epoch}
    assert {r.attempt for r in rows} == {1}


def test_figures_are_readable_while_the_job_runs(pg_settings: Settings, tmp_path: Path) -> None:
    epochs = 300
    a, base = api(pg_settings, tmp_path / "api.log")
    w = worker(pg_settings, tmp_path / "worker.log")
    with running(a, w), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        created = client.post("/v1/jobs", json=digits_spec(epochs=epochs))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        partial: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            curves = client.get(f"/v1/jobs/{job_id}/curves").json()
            if curves["status"] == "running" and 0 < len(curves["epochs"]) < epochs:
                partial = curves["epochs"]
                break
            assert curves["status"] in {"queued", "running"}, (curves["status"], w.log())
            time.sleep(0.02)
        assert partial, "never saw a partial curve while the job ran"
        assert partial == list(range(1, len(partial) + 1))
        for phase in ("train", "train_eval", "val"):
            values = curves["series"][phase]["loss"]
            assert len(values) == len(partial) and None not in values, phase

        # Reading again later shows more: the curve grows while the job runs.
        wait_for(
            lambda: len(client.get(f"/v1/jobs/{job_id}/curves").json()["epochs"]) > len(partial),
            60,
            0.1,
            "the curve to grow",
        )
        client.post(f"/v1/jobs/{job_id}/cancel")  # done with it; spare the CPU


def test_cancel_while_running_stops_within_seconds(
    pg_settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = fast(pg_settings)
    a, base = api(settings, tmp_path / "api.log")
    w = worker(settings, tmp_path / "worker.log")
    with running(a, w), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        created = client.post("/v1/jobs", json=sine_spec(epochs=5000))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        wait_training(factory, job_id)

        asked = time.monotonic()
        response = client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["cancel_requested"] is True
        at_cancel = wait_status(factory, job_id, {"cancelled", "succeeded", "failed"}, 10)
        took = time.monotonic() - asked
        assert at_cancel.status == "cancelled", (at_cancel, w.log())
        assert took < 5, f"cancel took {took:.1f}s"
        assert at_cancel.error == "cancelled on request"
        assert 0 < at_cancel.max_epoch < 5000

        time.sleep(1.0)  # five heartbeats: a loop still running would have stored an epoch
        later = snapshot(factory, job_id)
        assert later == at_cancel, (later, at_cancel)
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancel_while_queued_is_final_and_never_trains(
    pg_settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    a, base = api(pg_settings, tmp_path / "api.log")
    with running(a), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        created = client.post("/v1/jobs", json=sine_spec(epochs=3))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert queue_length(pg_settings) == 1  # the doorbell waits for a worker

        cancelled = client.post(f"/v1/jobs/{job_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["finished_at"] is not None

    w = worker(fast(pg_settings), tmp_path / "worker.log")
    with running(w):
        wait_for(
            lambda: queue_length(pg_settings) == 0 and "not claimable" in w.log(),
            30,
            0.1,
            "the worker to take and drop the doorbell",
        )
        time.sleep(1.0)  # two reaper sweeps: a cancelled job is not re-rung
        assert w.log().count("not claimable") == 1, w.log()
    snap = snapshot(factory, job_id)
    assert (snap.status, snap.attempt, snap.max_epoch) == ("cancelled", 0, 0)
    assert figures(factory, job_id) == []


def test_a_spec_that_fails_at_run_time_ends_failed_with_the_reason(
    pg_settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    spec = sine_spec(epochs=3)
    spec["model"]["layers"] = spec["model"]["layers"][:-1]  # drop hardsigmoid: raw scores
    job_id = submit(pg_settings, factory, spec)
    ring(pg_settings, job_id)
    w = worker(pg_settings, tmp_path / "worker.log")
    with running(w):
        snap = wait_status(factory, job_id, {"succeeded", "failed", "cancelled"})
    assert snap.status == "failed", (snap, w.log())
    assert snap.attempt == 1
    assert snap.error is not None
    assert "takes probabilities in [0, 1]" in snap.error
    assert "internal error" not in snap.error
    assert snap.max_epoch == 0


def test_sigterm_hands_the_running_job_back_and_a_new_worker_finishes_it(
    pg_settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = fast(pg_settings)
    epochs = 10  # long enough to interrupt after epoch 1, short enough to finish
    job_id = submit(settings, factory, sine_spec(epochs=epochs))
    ring(settings, job_id)
    first = worker(settings, tmp_path / "worker-1.log")
    with running(first):
        wait_training(factory, job_id, epochs=1)
        first.proc.send_signal(signal.SIGTERM)  # the parent only, as a supervisor would
        assert first.proc.wait(timeout=30) == 0, first.log()
    assert "released to the queue" in first.log()
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempt, job.worker, job.lease_expires_at) == (
            "queued",
            0,
            None,
            None,
        )

    second = worker(settings, tmp_path / "worker-2.log")
    with running(second):
        snap = wait_status(factory, job_id, {"succeeded", "failed", "cancelled"}, 120)
    assert snap.status == "succeeded", (snap, second.log())
    assert (snap.attempt, snap.max_epoch) == (1, epochs)
    rows = figures(factory, job_id)
    per_key = Counter((r.epoch, r.phase) for r in rows)
    assert set(per_key.values()) == {1}
    assert {e for e, _ in per_key} == set(range(1, epochs + 1))
    assert {r.attempt for r in rows} == {1}
