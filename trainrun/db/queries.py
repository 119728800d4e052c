"""Every read and write of job state. Callers own the transaction; these only execute and flush.

Writes made on behalf of a running attempt are fenced: they match ``fence = :token`` and
``status = 'running'``, so a worker that lost its lease can no longer change anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trainrun.db import curve_blocks
from trainrun.db.pages import newest_first, page_of
from trainrun.db.tables import FINAL_STATUSES, Artifact, EpochFigures, Job, JobStatus, utcnow
from trainrun.db.webhook_queries import enqueue_job_event
from trainrun.errors import NotFound, SpecError, TooManyRequests

FIGURE_FIELDS = (
    "n",
    "loss_sum",
    "penalty",
    "correct",
    "ties",
    "sse",
    "sae",
    "target_sum",
    "target_sq_sum",
    "target_count",
    "seconds",
)


FIGURE_DEFAULTS = {"penalty": 0.0, "seconds": 0.0}


@lru_cache(maxsize=4)
def _figures_upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (job_id, epoch, phase) DO UPDATE, built once per dialect."""
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt = insert(EpochFigures)
    return stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch", "phase"],
        set_={k: getattr(stmt.excluded, k) for k in (*FIGURE_FIELDS, "attempt", "created_at")},
    )


class Fenced(Exception):
    """This attempt no longer owns the job (lease lost, re-claimed, or job ended)."""


def create_job(
    session: Session,
    *,
    name: str,
    spec: dict[str, Any],
    owner: str,
    epochs_total: int,
    parameter_count: int,
    idempotency_key: str | None = None,
) -> Job:
    job = Job(
        name=name,
        spec=spec,
        owner=owner,
        epochs_total=epochs_total,
        parameter_count=parameter_count,
        idempotency_key=idempotency_key,
        enqueued_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def find_idempotent(session: Session, owner: str, key: str, spec: dict[str, Any]) -> Job | None:
    """The job an earlier submit with this key made; the same key with another spec is a 422."""
    job = session.scalars(select(Job).where(Job.owner == owner, Job.idempotency_key == key)).first()
    if job is not None and job.spec != spec:
        raise SpecError(
            (), f"Idempotency-Key '{key}' was already used for a different spec (job {job.id})"
        )
    return job


def check_active_quota(session: Session, owner: str, limit: int) -> None:
    active = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.owner == owner,
                Job.status.in_([JobStatus.queued.value, JobStatus.running.value]),
            )
        )
        or 0
    )
    if active >= limit:
        raise TooManyRequests(
            f"'{owner}' has {active} queued or running jobs; the limit is {limit}. "
            "Wait for some to finish or cancel them."
        )


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job, or ``NotFound``; with ``owner`` set, another owner's job is also not found."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFound(f"job {job_id} not found")
    return job


@dataclass(frozen=True)
class Page:
    jobs: Sequence[Job]
    next_cursor: str | None


def list_jobs(
    session: Session, *, owner: str | None, status: str | None, limit: int, cursor: str | None
) -> Page:
    """Newest first; the cursor is the (created_at, id) of the last row of the previous page."""
    q = newest_first(select(Job), Job, limit, cursor)
    if owner is not None:
        q = q.where(Job.owner == owner)
    if status is not None:
        q = q.where(Job.status == status)
    return Page(*page_of(session.scalars(q).all(), limit))


def mark_enqueued(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def claim_job(
    session: Session, job_id: str, worker: str, lease_seconds: float, max_attempts: int
) -> int | None:
    """Atomically take a queued job (or one whose lease expired); returns the fencing token.

    The token is ``fence``, which grows on every claim. ``attempt`` counts the attempts that
    count against the cap; a drained job gives its attempt back, never its token.
    """
    now = utcnow()
    claimable = or_(
        Job.status == JobStatus.queued.value,
        and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now),
    )
    row = session.execute(
        update(Job)
        .where(
            Job.id == job_id, claimable, Job.attempt < max_attempts, Job.cancel_requested.is_(False)
        )
        .values(
            status=JobStatus.running.value,
            attempt=Job.attempt + 1,
            fence=Job.fence + 1,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .returning(Job.fence)
    ).first()
    if row is None:
        return None
    enqueue_job_event(session, job_id, "job.started")
    return int(row[0])


def _fenced(job_id: str, token: int) -> Any:
    return and_(Job.id == job_id, Job.fence == token, Job.status == JobStatus.running.value)


def heartbeat(session: Session, job_id: str, token: int, lease_seconds: float) -> bool:
    """Extend the lease; returns whether a cancel was requested. Raises ``Fenced`` if lost."""
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(_fenced(job_id, token))
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Job.cancel_requested)
    ).first()
    if row is None:
        raise Fenced(job_id)
    return bool(row[0])


def record_epoch(
    session: Session,
    job_id: str,
    token: int,
    epoch: int,
    figures: dict[str, dict[str, Any]],
    lease_seconds: float,
) -> bool:
    """Upsert one epoch's figures (one row per phase) and advance the job, under the fence.

    Returns whether a cancel was requested.
    """
    now = utcnow()
    row = session.execute(
        update(Job)
        .where(_fenced(job_id, token))
        .values(
            epoch_reached=func.max(Job.epoch_reached, epoch)
            if _is_sqlite(session)
            else func.greatest(Job.epoch_reached, epoch),
            heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(Job.cancel_requested, Job.attempt, Job.epoch_reached)
    ).first()
    if row is None:
        raise Fenced(job_id)
    rows = [
        {
            "job_id": job_id,
            "epoch": epoch,
            "phase": phase,
            "attempt": row[1],
            "created_at": now,
            # The table's defaults do not apply to an explicit None: fill them here.
            **{k: stats.get(k, FIGURE_DEFAULTS.get(k)) for k in FIGURE_FIELDS},
        }
        for phase, stats in figures.items()
    ]
    if rows:
        # One cached statement run as executemany: a multi-VALUES insert would be compiled anew
        # on every call (about 10 ms per epoch on SQLite).
        session.execute(_figures_upsert(session.get_bind().dialect.name), rows)
        curve_blocks.after_write(session, job_id, epoch, row[2])
    enqueue_job_event(session, job_id, "job.epoch")
    return bool(row[0])


def finish_job(
    session: Session, job_id: str, token: int, status: JobStatus, error: str | None = None
) -> None:
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(_fenced(job_id, token))
        .values(
            status=status.value, error=error, finished_at=now, lease_expires_at=None, updated_at=now
        )
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise Fenced(job_id)
    enqueue_job_event(session, job_id, f"job.{status.value}")


def release_job(session: Session, job_id: str, token: int) -> None:
    """Give a running job back to the queue (worker shutting down); the attempt is not counted.

    ``enqueued_at`` is cleared: the next reaper sweep on any live worker rings its doorbell.
    """
    result = session.execute(
        update(Job)
        .where(_fenced(job_id, token))
        .values(
            status=JobStatus.queued.value,
            attempt=Job.attempt - 1,
            lease_expires_at=None,
            worker=None,
            enqueued_at=None,
            updated_at=utcnow(),
        )
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise Fenced(job_id)


def request_cancel(session: Session, job: Job) -> Job:
    """Queued jobs end at once; running ones are stopped by their worker between batches."""
    if JobStatus(job.status) in FINAL_STATUSES:
        return job
    now = utcnow()
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.cancelled.value
        job.finished_at = now
    job.cancel_requested = True
    job.updated_at = now
    session.flush()
    if job.status == JobStatus.cancelled.value:
        enqueue_job_event(session, job.id, "job.cancelled")
    return job


def figures_for_job(session: Session, job_id: str, since_epoch: int = 0) -> Sequence[EpochFigures]:
    q = (
        select(EpochFigures)
        .where(EpochFigures.job_id == job_id, EpochFigures.epoch > since_epoch)
        .order_by(EpochFigures.epoch, EpochFigures.phase)
    )
    return session.scalars(q).all()


def stale_jobs(session: Session, *, queued_before: datetime, limit: int = 100) -> Sequence[Job]:
    """Running jobs whose lease expired, and queued jobs whose doorbell may have been lost."""
    now = utcnow()
    q = (
        select(Job)
        .where(
            or_(
                and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now),
                and_(
                    Job.status == JobStatus.queued.value,
                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < queued_before),
                ),
            )
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return session.scalars(q).all()


def fail_exhausted(session: Session, max_attempts: int) -> int:
    """Jobs whose lease expired on their last allowed attempt end as failed."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.status == JobStatus.running.value,
            Job.lease_expires_at < now,
            Job.attempt >= max_attempts,
        )
        .values(
            status=JobStatus.failed.value,
            finished_at=now,
            lease_expires_at=None,
            error=f"worker lost on each of {max_attempts} attempts",
            updated_at=now,
        )
        .returning(Job.id)
    )
    failed = list(result.scalars())
    for job_id in failed:
        enqueue_job_event(session, job_id, "job.failed")
    return len(failed)


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def record_artifact(
    session: Session,
    job_id: str,
    token: int,
    *,
    kind: str,
    path: str,
    size: int,
    sha256: str,
    epoch: int,
) -> str | None:
    """Point the job's ``kind`` artifact at a new file, under the fence.

    Returns the path it replaced (the caller deletes that file), or None.
    """
    fenced = session.execute(
        update(Job).where(_fenced(job_id, token)).values(updated_at=utcnow()).returning(Job.attempt)
    ).first()
    if fenced is None:
        raise Fenced(job_id)
    current = session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)
    ).first()
    previous = current.path if current is not None else None
    if current is None:
        current = Artifact(job_id=job_id, kind=kind)
        session.add(current)
    current.path, current.bytes, current.sha256 = path, size, sha256
    current.epoch, current.attempt, current.created_at = epoch, fenced[0], utcnow()
    session.flush()
    return previous if previous != path else None


def get_artifact(session: Session, job_id: str, kind: str) -> Artifact | None:
    return session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)
    ).first()
