"""Nothing lost, nothing doubled: real worker processes under the faults a deployment meets.

Each test breaks something for real (kill -9, a Redis restart or flush, PostgreSQL connections
cut, a short visibility timeout, SIGTERM) with shortened leases and sweeps, then reads the
outcome from the database: the job's final status, its attempt count and fencing token (one
per claim), and its figures (one row per epoch and phase, epochs 1..N, equal to an
uninterrupted run where the spec is deterministic on CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import PG_ADMIN_URL, settings_env
from tests.support import Service, free_port, service_env, sine_spec, wait_for
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import EpochFigures, Job
from trainrun.planning import prepare_data
from trainrun.settings import Settings
from trainrun.spec import JobSpec
from worker.celery_app import make_celery, send_run_job
from worker.engine import Hooks, train

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

FINAL = {"succeeded", "failed", "cancelled", "timed_out"}
PHASES = {"train", "train_eval", "val"}
COMPARED = ("n", "loss_sum", "penalty", "correct", "ties")
# Long enough to be interrupted mid-run, short enough to finish in a few seconds.
EPOCHS = 40
RESUMABLE = sine_spec(epochs=EPOCHS)

Figures = dict[int, dict[str, dict[str, Any]]]  # epoch -> phase -> stored statistics


# -- processes ---------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a free port, so it can be stopped and flushed."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def answers() -> bool:
            with self.client() as r:
                return bool(r.ping())

        wait_for(answers, 10, 0.05, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a crash: nothing is saved (--save "", no AOF)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(pg_settings: Settings) -> Settings:
    """Shortened lease, heartbeat and sweeps: a dead worker is noticed within seconds."""
    return pg_settings.model_copy(
        update={
            "lease_seconds": 3.0,
            "heartbeat_seconds": 0.5,
            "reaper_interval_seconds": 1.0,
            "resend_after_seconds": 2.0,
        }
    )


@pytest.fixture
def factory(pg_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_settings)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Every process a test starts; each process group killed however the test ends."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in started:
            service.signal_group(signal.SIGKILL)  # the outcome is already read: no drain
            service.proc.wait(timeout=10)
            service.stop()


def start_worker(services: list[Service], settings: Settings, log: Path, **env: str) -> Service:
    service = Service(["worker"], service_env(settings_env(settings), **env), log)
    services.append(service)
    return service


def wait_ready(worker: Service) -> None:
    wait_for(lambda: " ready." in worker.log(), 60, 0.1, f"worker {worker.proc.pid} to be ready")


def start_api(services: list[Service], settings: Settings, log: Path) -> str:
    port = free_port()
    env = service_env(settings_env(settings))
    services.append(Service(["api", "--port", str(port)], env, log))
    return f"http://127.0.0.1:{port}"


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def is_gone(pid: int) -> bool:
    """The process no longer runs (exited, or a zombie awaiting its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def logs(*workers: Service) -> str:
    return "\n".join(f"--- {' '.join(w.args)} {w.proc.pid}\n{w.log()[-6000:]}" for w in workers)


# -- the database ------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    status: str
    attempt: int
    fence: int  # one per claim
    worker: str | None
    error: str | None
    max_epoch: int


def submit(factory: sessionmaker[Session], spec: dict[str, Any]) -> str:
    """Insert the job row (committed) as the API does, without ringing its doorbell."""
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


def ring(settings: Settings, job_id: str) -> None:
    app = make_celery(settings)
    try:
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
            select(Job.status, Job.attempt, Job.fence, Job.worker, Job.error, max_epoch).where(
                Job.id == job_id
            )
        ).one()
    return Snapshot(*row)


def wait_status(
    factory: sessionmaker[Session], job_id: str, statuses: set[str], timeout: float = 60.0
) -> Snapshot:
    def reached() -> Snapshot | None:
        snap = snapshot(factory, job_id)
        return snap if snap.status in statuses else None

    return wait_for(reached, timeout, 0.05, f"job {job_id} to be {sorted(statuses)}")


def wait_final(factory: sessionmaker[Session], job_id: str, timeout: float = 60.0) -> Snapshot:
    return wait_status(factory, job_id, FINAL, timeout)


def wait_training(
    factory: sessionmaker[Session], job_id: str, epochs: int, attempt: int | None = None
) -> Snapshot:
    """Until the job runs (on ``attempt``, if given) with at least ``epochs`` epochs stored."""

    def reached() -> Snapshot | None:
        snap = snapshot(factory, job_id)
        assert snap.status in {"queued", "running"}, snap
        running = snap.status == "running" and snap.worker is not None
        if attempt is not None and snap.attempt != attempt:
            return None
        return snap if running and snap.max_epoch >= epochs else None

    return wait_for(reached, 60, 0.02, f"job {job_id} to train {epochs} epochs")


def child_pid(snap: Snapshot) -> int:
    """The pool child that runs the job: ``jobs.worker`` is ``host:pid`` of that process."""
    assert snap.worker is not None, snap
    return int(snap.worker.rsplit(":", 1)[1])


def stored_figures(factory: sessionmaker[Session], job_id: str) -> list[EpochFigures]:
    with factory() as session:
        return list(queries.figures_for_job(session, job_id))


def assert_complete_once(
    factory: sessionmaker[Session], job_id: str, epochs: int
) -> list[EpochFigures]:
    """Nothing doubled, nothing lost: one row per (epoch, phase), all three phases for 1..N."""
    rows = stored_figures(factory, job_id)
    per_key = Counter((r.epoch, r.phase) for r in rows)
    assert set(per_key.values()) == {1}, per_key
    assert {e for e, _ in per_key} == set(range(1, epochs + 1))
    for epoch in range(1, epochs + 1):
        assert {p for e, p in per_key if e == epoch} >= PHASES, epoch
    return rows


_clean_runs: dict[str, Figures] = {}


def clean_run(spec: dict[str, Any]) -> Figures:
    """The figures of an uninterrupted run, trained in this process (cached per spec)."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _clean_runs:
        parsed = JobSpec.model_validate(spec)
        figures: Figures = {}

        def on_epoch(epoch: int, phases: dict[str, dict[str, Any]]) -> None:
            figures.setdefault(epoch, {}).update(phases)

        train(parsed, prepare_data(parsed), Hooks(on_epoch))
        _clean_runs[key] = figures
    return _clean_runs[key]


def assert_equal_to_clean_run(rows: list[EpochFigures], spec: dict[str, Any]) -> None:
    clean = clean_run(spec)
    assert {(r.epoch, r.phase) for r in rows} == {(e, p) for e, f in clean.items() for p in f}
    for r in rows:
        expected = clean[r.epoch][r.phase]
        for key in COMPARED:
            want = expected.get(key)
            got = getattr(r, key)
            if want is None:
                continue
            assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (r.epoch, r.phase, key)


# -- 1, 2: a worker dies -----------------------------------------------------------------


def test_pool_child_killed_mid_epoch_resumes_from_its_checkpoint_on_attempt_two(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    w = start_worker(services, settings, tmp_path / "worker.log")
    job_id = submit(factory, RESUMABLE)
    ring(settings, job_id)
    before = wait_training(factory, job_id, epochs=3)
    child = child_pid(before)
    assert parent_pid(child) == w.proc.pid  # the pool child, not the worker's main process
    os.kill(child, signal.SIGKILL)

    snap = wait_final(factory, job_id)
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 2, 2), (snap, logs(w))
    rows = assert_complete_once(factory, job_id, EPOCHS)
    first_of_attempt_two = min(r.epoch for r in rows if r.attempt == 2)
    # Resumed after the last checkpoint, not started over; at most the killed epoch re-done.
    assert 1 < first_of_attempt_two <= before.max_epoch + 1, (first_of_attempt_two, before)
    assert "resuming after epoch" in w.log()
    assert_equal_to_clean_run(rows, RESUMABLE)


def test_worker_main_process_killed_takes_its_child_along_and_a_new_worker_finishes(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    first = start_worker(services, settings, tmp_path / "worker-1.log")
    job_id = submit(factory, RESUMABLE)
    ring(settings, job_id)
    child = child_pid(wait_training(factory, job_id, epochs=3))
    assert parent_pid(child) == first.proc.pid
    os.kill(first.proc.pid, signal.SIGKILL)  # the main process only
    first.proc.wait(timeout=10)
    wait_for(lambda: is_gone(child), 10, 0.05, "the orphaned pool child to die (pdeathsig)")
    assert snapshot(factory, job_id).status == "running"  # nobody told the database

    second = start_worker(services, settings, tmp_path / "worker-2.log")
    snap = wait_final(factory, job_id)
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 2, 2), (snap, logs(second))
    rows = assert_complete_once(factory, job_id, EPOCHS)
    assert min(r.epoch for r in rows if r.attempt == 2) > 1  # resumed
    assert_equal_to_clean_run(rows, RESUMABLE)


# -- 3, 4, 5: the broker fails -----------------------------------------------------------


def test_redis_restarted_mid_job_the_job_trains_once_and_the_worker_reconnects(
    settings: Settings,
    factory: sessionmaker[Session],
    services: list[Service],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"broker_url": private_redis.url})
    w = start_worker(services, settings, tmp_path / "worker.log")
    job_id = submit(factory, RESUMABLE)
    ring(settings, job_id)
    wait_training(factory, job_id, epochs=2)
    private_redis.stop()
    time.sleep(0.5)
    private_redis.start()  # empty: the unacked message is gone with the old process

    snap = wait_final(factory, job_id)
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 1, 1), (snap, logs(w))
    assert_equal_to_clean_run(assert_complete_once(factory, job_id, EPOCHS), RESUMABLE)

    # The worker reconnected: a job submitted after the restart runs too.
    later = submit(factory, sine_spec(epochs=2))
    ring(settings, later)
    snap = wait_final(factory, later)
    assert (snap.status, snap.fence) == ("succeeded", 1), (snap, logs(w))


def test_redis_flushed_while_jobs_wait_the_reaper_resends_them_all(
    settings: Settings,
    factory: sessionmaker[Session],
    services: list[Service],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"broker_url": private_redis.url})
    jobs = [submit(factory, sine_spec(epochs=2)) for _ in range(2)]
    for job_id in jobs:
        ring(settings, job_id)
    with private_redis.client() as r:
        assert r.llen(settings.queue_name) == 2
        r.flushall()
        assert r.llen(settings.queue_name) == 0

    w = start_worker(services, settings, tmp_path / "worker.log")
    for job_id in jobs:
        snap = wait_final(factory, job_id)
        assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 1, 1), (snap, logs(w))
        assert_complete_once(factory, job_id, 2)


def test_submit_while_redis_is_down_answers_at_once_and_the_job_runs_later(
    settings: Settings,
    factory: sessionmaker[Session],
    services: list[Service],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"broker_url": private_redis.url})
    private_redis.stop()
    base = start_api(services, settings, tmp_path / "api.log")
    with httpx.Client(base_url=base, timeout=30) as client:
        wait_for(lambda: client.get("/healthz").status_code == 200, 60, 0.1, "the API")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["broker"] != "ok"

        asked = time.monotonic()
        created = client.post("/v1/jobs", json=sine_spec(epochs=2))
        took = time.monotonic() - asked
    assert created.status_code == 201, created.text
    assert took < 5, f"submit took {took:.1f}s with the broker down"
    job_id = created.json()["id"]
    assert snapshot(factory, job_id).status == "queued"  # the row is the queue

    private_redis.start()
    w = start_worker(services, settings, tmp_path / "worker.log")
    snap = wait_final(factory, job_id)
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 1, 1), (snap, logs(w))
    assert_complete_once(factory, job_id, 2)


# -- 6: the database connection is cut ---------------------------------------------------


def test_database_connections_cut_mid_job_the_job_recovers(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    w = start_worker(services, settings, tmp_path / "worker.log")
    job_id = submit(factory, RESUMABLE)
    ring(settings, job_id)
    wait_training(factory, job_id, epochs=3)

    database = make_url(settings.database_url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        with admin.connect() as conn:
            until = time.monotonic() + 2.0
            while time.monotonic() < until:
                killed += len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).all()
                )
                time.sleep(0.05)
    finally:
        admin.dispose()
    assert killed > 0

    snap = wait_final(factory, job_id)
    assert snap.status == "succeeded", (snap, logs(w))
    # The cut reached the job: it retried its writes (attempt 1) or was left to its lease.
    assert "database error, retrying" in w.log() or snap.attempt == 2, logs(w)
    assert snap.attempt <= 2
    assert_equal_to_clean_run(assert_complete_once(factory, job_id, EPOCHS), RESUMABLE)


# -- 7: a job outlives the visibility timeout --------------------------------------------


def test_a_job_longer_than_the_visibility_timeout_trains_once(
    settings: Settings,
    factory: sessionmaker[Session],
    services: list[Service],
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    visibility = 2.0
    settings = settings.model_copy(
        update={
            "broker_url": private_redis.url,
            "visibility_timeout_seconds": visibility,
            "resend_after_seconds": 600.0,  # no reaper doorbells: the broker's is the only one
        }
    )
    env = {"TRAINRUN_VISIBILITY_TIMEOUT_SECONDS": str(visibility)}
    epochs = 400  # outlives a second worker's start (the engine runs ~45 ms an epoch here)
    busy = start_worker(services, settings, tmp_path / "worker-1.log", **env)
    job_id = submit(factory, sine_spec(epochs=epochs))
    ring(settings, job_id)
    wait_training(factory, job_id, epochs=1)
    time.sleep(visibility + 0.5)  # the message is now older than the visibility timeout
    with private_redis.client() as r:  # one message, taken and not acked
        assert (r.llen(settings.queue_name), r.hlen("unacked")) == (0, 1)

    # A second worker restores overdue unacked messages as it starts and takes the redelivery.
    other = start_worker(services, settings, tmp_path / "worker-2.log", **env)
    wait_for(lambda: "not claimable" in other.log(), 60, 0.1, "the redelivery to be dropped")
    assert snapshot(factory, job_id).status == "running", logs(busy, other)

    snap = wait_final(factory, job_id, timeout=90)
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 1, 1), (snap, logs(busy))
    assert_complete_once(factory, job_id, epochs)
    assert "not claimable" not in busy.log()

    def all_acked() -> bool:
        with private_redis.client() as r:
            return r.llen(settings.queue_name) == 0 and r.hlen("unacked") == 0

    wait_for(all_acked, 10, 0.1, "both deliveries to be acked")


# -- 8: a job that kills its worker every time -------------------------------------------


def test_a_job_whose_worker_dies_on_every_attempt_fails_at_the_cap(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_attempts": 3})
    w = start_worker(services, settings, tmp_path / "worker.log")
    job_id = submit(factory, sine_spec(epochs=5000))
    ring(settings, job_id)
    for attempt in (1, 2, 3):
        snap = wait_training(factory, job_id, epochs=0, attempt=attempt)
        os.kill(child_pid(snap), signal.SIGKILL)

    snap = wait_final(factory, job_id, timeout=30)
    assert (snap.status, snap.attempt, snap.fence) == ("failed", 3, 3), (snap, logs(w))
    assert snap.error == "worker lost on each of 3 attempts"
    time.sleep(2 * settings.reaper_interval_seconds)  # no further claim after the cap
    assert snapshot(factory, job_id) == snap


# -- 9: cancel ---------------------------------------------------------------------------


def test_cancel_while_queued_ends_at_once_and_while_running_within_two_seconds(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"heartbeat_seconds": 0.2})
    base = start_api(services, settings, tmp_path / "api.log")
    w = start_worker(services, settings, tmp_path / "worker.log")
    with httpx.Client(base_url=base, timeout=30) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, 0.1, "the API")
        running = client.post("/v1/jobs", json=sine_spec(epochs=5000))
        assert running.status_code == 201, running.text
        running_id = running.json()["id"]
        wait_training(factory, running_id, epochs=2)

        # The one pool child is busy: this job waits in the queue.
        queued = client.post("/v1/jobs", json=sine_spec(epochs=2))
        assert queued.status_code == 201, queued.text
        queued_id = queued.json()["id"]
        cancelled = client.post(f"/v1/jobs/{queued_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert snapshot(factory, queued_id).status == "cancelled"

        asked = time.monotonic()
        response = client.post(f"/v1/jobs/{running_id}/cancel")
        assert response.status_code == 200, response.text
        at_cancel = wait_status(factory, running_id, FINAL, timeout=10)
        took = time.monotonic() - asked
    assert at_cancel.status == "cancelled", (at_cancel, logs(w))
    assert took < 2, f"cancel took {took:.1f}s"
    assert 0 < at_cancel.max_epoch < 5000

    # The freed child takes the cancelled job's doorbell and drops it; nothing more is stored.
    dropped = f"job {queued_id}: not claimable"
    wait_for(lambda: dropped in w.log(), 30, 0.1, "the queued job's doorbell to be dropped")
    time.sleep(1.0)  # five heartbeats: a loop still running would have stored an epoch
    assert snapshot(factory, running_id) == at_cancel
    with factory() as session:
        job = session.get_one(Job, running_id)
        assert job.finished_at is not None
        late = session.scalar(
            select(func.count())
            .select_from(EpochFigures)
            .where(EpochFigures.job_id == running_id, EpochFigures.created_at > job.finished_at)
        )
    assert late == 0
    queued_snap = snapshot(factory, queued_id)
    assert (queued_snap.status, queued_snap.attempt, queued_snap.max_epoch) == ("cancelled", 0, 0)


# -- 10: SIGTERM drain -------------------------------------------------------------------


def test_sigterm_hands_the_job_to_the_other_worker_which_resumes_it(
    settings: Settings, factory: sessionmaker[Session], services: list[Service], tmp_path: Path
) -> None:
    workers = [
        start_worker(services, settings, tmp_path / "worker-a.log"),
        start_worker(services, settings, tmp_path / "worker-b.log"),
    ]
    for w in workers:
        wait_ready(w)
    job_id = submit(factory, RESUMABLE)
    ring(settings, job_id)
    before = wait_training(factory, job_id, epochs=3)
    owner_pid = parent_pid(child_pid(before))
    draining = next(w for w in workers if w.proc.pid == owner_pid)
    other = next(w for w in workers if w is not draining)

    draining.proc.send_signal(signal.SIGTERM)  # the main process, as a supervisor would
    assert draining.proc.wait(timeout=30) == 0, draining.log()
    assert "released to the queue" in draining.log()

    snap = wait_final(factory, job_id)
    # The drained attempt is given back (attempt 1), its token is not (fence 2).
    assert (snap.status, snap.attempt, snap.fence) == ("succeeded", 1, 2), (snap, logs(other))
    resumed = [line for line in other.log().splitlines() if "resuming after epoch" in line]
    assert resumed, other.log()
    assert int(resumed[0].rsplit(" ", 1)[1]) >= before.max_epoch - 1 >= 2
    assert_equal_to_clean_run(assert_complete_once(factory, job_id, EPOCHS), RESUMABLE)
