"""Run one job: claim it, train it with a heartbeat, record each epoch, end it. Idempotent.

``execute_job`` is what the Celery task calls; a test or a CLI can call it too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.engine import transaction
from trainrun.db.tables import Job, JobStatus
from trainrun.errors import SpecError
from trainrun.logs import bind_job, unbind_job
from trainrun.planning import prepare_data
from trainrun.settings import Settings
from trainrun.spec import JobSpec
from worker.artifacts import ArtifactStore
from worker.engine import Hooks, JobFailure, Stopped, train
from worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outcome(StrEnum):
    skipped = "skipped"  # another delivery or worker owns the job, or it already ended
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    released = "released"  # handed back to the queue (worker draining)
    fenced = "fenced"  # lost the lease mid-run; the new owner carries on


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_job(
    job_id: str,
    settings: Settings,
    factory: sessionmaker[Session],
    drain: threading.Event | None = None,
) -> Outcome:
    with transaction(factory) as session:
        token = queries.claim_job(
            session, job_id, worker_name(), settings.lease_seconds, settings.max_attempts
        )
        job = session.get(Job, job_id) if token is not None else None
        raw_spec: dict[str, Any] | None = dict(job.spec) if job is not None else None
        started_at = job.started_at if job is not None else None
        attempt = job.attempt if job is not None else 0
    if token is None or raw_spec is None:
        log.info("job %s: not claimable here (duplicate delivery or already taken)", job_id)
        return Outcome.skipped
    log_binding = bind_job(job_id, attempt)  # JSON log lines carry job_id and attempt
    log.info("job %s: claimed (fencing token %s)", job_id, token)

    hb = Heartbeat(factory, job_id, token, settings.heartbeat_seconds, settings.lease_seconds)
    hb.start()
    deadline = _deadline(raw_spec, started_at)

    def should_stop() -> str | None:
        if hb.fenced.is_set():
            return "fenced"
        if hb.cancelled.is_set():
            return "cancel"
        if drain is not None and drain.is_set():
            return "drain"
        if deadline is not None and time.time() > deadline:
            return "timeout"
        return None

    def retrying(work: Callable[[], T]) -> T:
        return _retrying(work, job_id, settings.lease_seconds, hb.fenced)

    def record(epoch: int, figures: dict[str, dict[str, Any]]) -> bool:
        with transaction(factory) as session:
            return queries.record_epoch(
                session, job_id, token, epoch, figures, settings.lease_seconds
            )

    def on_epoch(epoch: int, figures: dict[str, dict[str, Any]]) -> None:
        try:
            if retrying(lambda: record(epoch, figures)):
                hb.cancelled.set()
        except queries.Fenced:
            hb.fenced.set()
            raise Stopped("fenced") from None

    store = ArtifactStore(factory, settings, job_id, token)
    try:
        spec = JobSpec.model_validate(raw_spec)
        hooks = Hooks(
            on_epoch,
            should_stop,
            lambda state: retrying(lambda: store.save_checkpoint(state)),
            retrying(store.load_checkpoint),
        )
        if hooks.resume is not None:
            log.info("job %s: resuming after epoch %s", job_id, hooks.resume.epoch)
        result = train(spec, prepare_data(spec), hooks)
        retrying(lambda: store.save_model(result, raw_spec))
        return _end(factory, job_id, token, JobStatus.succeeded)
    except queries.Fenced:
        return Outcome.fenced
    except OperationalError as exc:
        # The database stayed out of reach for a whole lease: another worker may own the job
        # by now. Ending it as failed would turn an outage into a lost job; the lease does it.
        log.error("job %s: database unreachable, leaving the job to its lease: %s", job_id, exc)
        return Outcome.fenced
    except Stopped as stop:
        if stop.reason == "cancel":
            return _end(factory, job_id, token, JobStatus.cancelled, "cancelled on request")
        if stop.reason == "drain":
            return _release(factory, job_id, token)
        if stop.reason == "timeout":
            limit = raw_spec.get("resources", {}).get("time_limit_seconds")
            return _end(
                factory, job_id, token, JobStatus.timed_out, f"time limit of {limit} s reached"
            )
        return Outcome.fenced
    except (JobFailure, SpecError) as exc:
        return _end(factory, job_id, token, JobStatus.failed, str(exc))
    except ValidationError as exc:
        return _end(factory, job_id, token, JobStatus.failed, f"invalid spec: {exc}")
    except Exception as exc:
        log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
        return _end(
            factory, job_id, token, JobStatus.failed, f"internal error: {type(exc).__name__}: {exc}"
        )
    finally:
        hb.stop()
        unbind_job(log_binding)


def _retrying(work: Callable[[], T], job_id: str, patience: float, fenced: threading.Event) -> T:
    """One unit of database work, retried while the connection is down (a restarted server,
    a cut connection) for up to ``patience`` seconds or until the attempt is fenced.

    Safe because every write retried here is idempotent: upserts and fenced conditional updates.
    """
    give_up = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return work()
        except OperationalError as exc:
            if fenced.is_set() or time.monotonic() + delay > give_up:
                raise
            log.warning("job %s: database error, retrying in %.1f s: %s", job_id, delay, exc.orig)
            time.sleep(delay)
            delay = min(2 * delay, 1.0)


def _deadline(raw_spec: dict[str, Any], started_at: datetime | None) -> float | None:
    """Epoch seconds after which the job must stop, counted from its first start."""
    limit = raw_spec.get("resources", {}).get("time_limit_seconds")
    if limit is None or started_at is None:
        return None
    return started_at.timestamp() + float(limit)


def _end(
    factory: sessionmaker[Session],
    job_id: str,
    token: int,
    status: JobStatus,
    error: str | None = None,
) -> Outcome:
    try:
        with transaction(factory) as session:
            queries.finish_job(session, job_id, token, status, error)
    except queries.Fenced:
        log.warning("job %s: lost the lease before it could end as %s", job_id, status)
        return Outcome.fenced
    log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
    return Outcome(status.value)


def _release(factory: sessionmaker[Session], job_id: str, token: int) -> Outcome:
    try:
        with transaction(factory) as session:
            queries.release_job(session, job_id, token)
    except queries.Fenced:
        return Outcome.fenced
    log.info("job %s: released to the queue (worker draining)", job_id)
    return Outcome.released
