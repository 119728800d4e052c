"""Reads and writes of sweeps and their runs. Callers own the transaction; these only flush."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from trainrun.db import queries
from trainrun.db.pages import newest_first, page_of
from trainrun.db.tables import (
    EpochFigures,
    Job,
    JobStatus,
    Sweep,
    SweepRunState,
    SweepVariant,
    utcnow,
)
from trainrun.errors import NotFound, SpecError

ACTIVE_JOB = (JobStatus.queued.value, JobStatus.running.value)
RunRow = tuple[SweepVariant, Job | None]


def create_sweep(
    session: Session,
    *,
    name: str,
    spec: dict[str, Any],
    owner: str,
    max_concurrent: int,
    runs: Sequence[tuple[int, int, int | None, dict[str, Any], dict[str, Any], int]],
    idempotency_key: str | None = None,
) -> Sweep:
    """The sweep and one pending row per run: (variant, repeat, seed, overrides, spec, params)."""
    sweep = Sweep(
        name=name,
        spec=spec,
        owner=owner,
        max_concurrent=max_concurrent,
        runs_total=len(runs),
        idempotency_key=idempotency_key,
    )
    session.add(sweep)
    session.flush()
    session.add_all(
        SweepVariant(
            sweep_id=sweep.id,
            variant=variant,
            repeat=repeat,
            seed=seed,
            overrides=overrides,
            spec=run_spec,
            parameter_count=params,
        )
        for variant, repeat, seed, overrides, run_spec, params in runs
    )
    session.flush()
    return sweep


def find_idempotent_sweep(
    session: Session, owner: str, key: str, spec: dict[str, Any]
) -> Sweep | None:
    sweep = session.scalars(
        select(Sweep).where(Sweep.owner == owner, Sweep.idempotency_key == key)
    ).first()
    if sweep is not None and sweep.spec != spec:
        raise SpecError(
            (), f"Idempotency-Key '{key}' was already used for a different sweep ({sweep.id})"
        )
    return sweep


def get_sweep(session: Session, sweep_id: str, owner: str | None = None) -> Sweep:
    """The sweep, or ``NotFound``; with ``owner`` set, another owner's sweep is not found."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (owner is not None and sweep.owner != owner):
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


@dataclass(frozen=True)
class SweepPage:
    sweeps: Sequence[Sweep]
    next_cursor: str | None


def list_sweeps(
    session: Session, *, owner: str | None, limit: int, cursor: str | None
) -> SweepPage:
    """Newest first; the cursor is the (created_at, id) of the previous page's last sweep."""
    q = newest_first(select(Sweep), Sweep, limit, cursor)
    if owner is not None:
        q = q.where(Sweep.owner == owner)
    return SweepPage(*page_of(session.scalars(q).all(), limit))


def sweep_runs(session: Session, sweep_ids: Sequence[str]) -> list[RunRow]:
    """Every run of these sweeps with its job (None until launched), in run order."""
    q = (
        select(SweepVariant, Job)
        .outerjoin(Job, Job.id == SweepVariant.job_id)
        .where(SweepVariant.sweep_id.in_(sweep_ids))
        .order_by(SweepVariant.sweep_id, SweepVariant.variant, SweepVariant.repeat)
    )
    return [(v, j) for v, j in session.execute(q)]


def figures_for_jobs(
    session: Session, job_ids: Sequence[str], phase: str | None = None
) -> Sequence[EpochFigures]:
    q = select(EpochFigures).where(EpochFigures.job_id.in_(job_ids))
    if phase is not None:
        q = q.where(EpochFigures.phase == phase)
    return session.scalars(q.order_by(EpochFigures.job_id, EpochFigures.epoch)).all()


def active_sweep_ids(session: Session, limit: int = 100) -> list[str]:
    """Sweeps with a run waiting for a slot or a job still queued or running."""
    q = (
        select(SweepVariant.sweep_id)
        .outerjoin(Job, Job.id == SweepVariant.job_id)
        .where(
            or_(
                SweepVariant.state == SweepRunState.pending.value,
                and_(
                    SweepVariant.state == SweepRunState.launched.value, Job.status.in_(ACTIVE_JOB)
                ),
            )
        )
        .group_by(SweepVariant.sweep_id)
        .order_by(func.min(SweepVariant.created_at))
        .limit(limit)
    )
    return list(session.scalars(q))


def lock_sweep(session: Session, sweep_id: str) -> Sweep | None:
    """The sweep, locked for this transaction; None if another scheduler holds it (PostgreSQL).

    SQLite needs no row lock: every writing transaction there holds the database's write lock.
    """
    q = select(Sweep).where(Sweep.id == sweep_id).with_for_update(skip_locked=True)
    return session.scalars(q).first()


def launch_pending(session: Session, sweep: Sweep) -> list[str]:
    """Create jobs for waiting runs while fewer than ``max_concurrent`` are active; their ids.

    The caller holds the sweep's lock and rings each job's doorbell after the commit.
    """
    if sweep.cancel_requested:
        return []
    active = (
        session.scalar(
            select(func.count())
            .select_from(SweepVariant)
            .join(Job, Job.id == SweepVariant.job_id)
            .where(SweepVariant.sweep_id == sweep.id, Job.status.in_(ACTIVE_JOB))
        )
        or 0
    )
    free = sweep.max_concurrent - active
    if free <= 0:
        return []
    waiting = session.scalars(
        select(SweepVariant)
        .where(
            SweepVariant.sweep_id == sweep.id,
            SweepVariant.state == SweepRunState.pending.value,
        )
        .order_by(SweepVariant.variant, SweepVariant.repeat)
        .limit(free)
    ).all()
    now = utcnow()
    launched: list[str] = []
    for run in waiting:
        job = Job(
            name=run.spec.get("name", sweep.name),
            spec=run.spec,
            owner=sweep.owner,
            epochs_total=run.spec.get("training", {}).get("epochs", 10),
            parameter_count=run.parameter_count,
            enqueued_at=now,
            sweep_id=sweep.id,
            sweep_variant=run.variant,
        )
        session.add(job)
        session.flush()
        run.state, run.job_id, run.launched_at = SweepRunState.launched.value, job.id, now
        launched.append(job.id)
    session.flush()
    return launched


def cancel_sweep(session: Session, sweep: Sweep) -> None:
    """Waiting runs are cancelled at once; launched jobs are cancelled like any job."""
    sweep.cancel_requested = True
    sweep.updated_at = utcnow()
    for run, job in sweep_runs(session, [sweep.id]):
        if run.state == SweepRunState.pending.value:
            run.state = SweepRunState.cancelled.value
        elif job is not None:
            queries.request_cancel(session, job)
    session.flush()


def stop_run(session: Session, run: SweepVariant, job: Job, reason: str) -> bool:
    """Cancel a running job for the sweep's stopping rule, recording why; False if it ended."""
    if JobStatus(job.status).is_final or job.cancel_requested:
        return False
    run.stop_reason = reason
    queries.request_cancel(session, job)
    return True
