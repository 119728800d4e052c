"""The reaper: re-queues jobs whose worker died and re-rings jobs whose message was lost.

Several reapers may run at once (one per worker, plus ``trainrun reaper``): each change is a
conditional UPDATE, so two reapers acting on one job do no harm; at worst a doorbell rings
twice and the claim drops the extra delivery.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import Celery
from sqlalchemy import and_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import Job, JobStatus, utcnow
from trainrun.db.webhook_queries import enqueue_job_event
from trainrun.settings import Settings
from trainrun.sweeps.scheduler import step_sweeps
from worker.celery_app import send_run_job

log = logging.getLogger(__name__)


def reap_once(factory: sessionmaker[Session], app: Celery, settings: Settings) -> list[str]:
    """One sweep; returns the ids whose doorbell was rung."""
    now = utcnow()
    resend_before = now - timedelta(seconds=settings.resend_after_seconds)
    to_ring: list[str] = []
    with transaction(factory) as session:
        failed = queries.fail_exhausted(session, settings.max_attempts)
        if failed:
            log.warning("reaper: %d job(s) failed after %d attempts", failed, settings.max_attempts)
        for job in queries.stale_jobs(session, queued_before=resend_before):
            if job.status == JobStatus.running.value:
                status = JobStatus.cancelled if job.cancel_requested else JobStatus.queued
                result = session.execute(
                    update(Job)
                    .where(
                        and_(
                            Job.id == job.id,
                            Job.attempt == job.attempt,
                            Job.status == JobStatus.running.value,
                            Job.lease_expires_at < now,
                        )
                    )
                    .values(
                        status=status.value,
                        lease_expires_at=None,
                        worker=None,
                        updated_at=now,
                        finished_at=now if status is JobStatus.cancelled else None,
                    )
                )
                if result.rowcount and status is JobStatus.queued:  # type: ignore[attr-defined]
                    log.warning("reaper: job %s lost its worker; re-queued", job.id)
                    to_ring.append(job.id)
                elif result.rowcount:  # type: ignore[attr-defined]
                    enqueue_job_event(session, job.id, "job.cancelled")
            else:
                to_ring.append(job.id)
        for job_id in to_ring:
            queries.mark_enqueued(session, job_id)
    for job_id in to_ring:
        try:
            send_run_job(app, job_id)
        except Exception as exc:  # broker down: the next sweep tries again
            log.warning("reaper: could not ring job %s: %s", job_id, exc)
    return to_ring


def run_reaper(settings: Settings, app: Celery, stop: threading.Event) -> None:
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    try:
        while not stop.is_set():
            try:
                reap_once(factory, app, settings)
                step_sweeps(factory, lambda job_id: send_run_job(app, job_id))  # sweep slots
            except SQLAlchemyError as exc:
                log.warning("reaper: database error, retrying next sweep: %s", exc)
            stop.wait(settings.reaper_interval_seconds)
    finally:
        engine.dispose()


def start_reaper_thread(settings: Settings, app: Celery) -> threading.Event:
    stop = threading.Event()
    threading.Thread(
        target=run_reaper, args=(settings, app, stop), name="reaper", daemon=True
    ).start()
    return stop
