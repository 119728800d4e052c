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
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.engine import transaction
from trainrun.db.tables import Job, JobStatus
from trainrun.errors import SpecError
from trainrun.planning import prepare_data
from trainrun.settings import Settings
from trainrun.spec import JobSpec
from worker.artifacts import ArtifactStore
from worker.engine import Hooks, JobFailure, Stopped, train
from worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)


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
    if token is None or raw_spec is None:
        log.info("job %s: not claimable here (duplicate delivery or already taken)", job_id)
        return Outcome.skipped
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

    def on_epoch(epoch: int, figures: dict[str, dict[str, Any]]) -> None:
        try:
            with transaction(factory) as session:
                if queries.record_epoch(
                    session, job_id, token, epoch, figures, settings.lease_seconds
                ):
                    hb.cancelled.set()
        except queries.Fenced:
            hb.fenced.set()
            raise Stopped("fenced") from None

    store = ArtifactStore(factory, settings, job_id, token)
    try:
        spec = JobSpec.model_validate(raw_spec)
        hooks = Hooks(on_epoch, should_stop, store.save_checkpoint, store.load_checkpoint())
        if hooks.resume is not None:
            log.info("job %s: resuming after epoch %s", job_id, hooks.resume.epoch)
        result = train(spec, prepare_data(spec), hooks)
        store.save_model(result, raw_spec)
        return _end(factory, job_id, token, JobStatus.succeeded)
    except queries.Fenced:
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
