"""Reads behind the curves, CSV, images and event stream: only the columns they need.

A 10,000-epoch job has 40,000 figure rows; building ORM objects for them costs more than the
whole response, so these return plain columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainrun.db.tables import EpochFigures, Job
from trainrun.figures import STAT_COLUMNS

CURVE_COLUMNS = ("epoch", "phase", *STAT_COLUMNS)
CSV_COLUMNS = ("epoch", "phase", "attempt", *STAT_COLUMNS, "seconds")


def figure_columns(
    session: Session,
    job_id: str,
    since_epoch: int = 0,
    names: Sequence[str] = CURVE_COLUMNS,
    phase: str | None = None,
) -> dict[str, tuple[Any, ...]]:
    """One tuple per column over the job's rows with ``epoch > since_epoch``, by epoch, phase."""
    q = (
        select(*(getattr(EpochFigures, c) for c in names))
        .where(EpochFigures.job_id == job_id, EpochFigures.epoch > since_epoch)
        .order_by(EpochFigures.epoch, EpochFigures.phase)
    )
    if phase is not None:
        q = q.where(EpochFigures.phase == phase)
    rows = session.execute(q).all()
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return dict(zip(names, transposed, strict=True))


@dataclass(frozen=True)
class JobState:
    status: str
    epoch: int
    updated_at: datetime
    error: str | None


def job_state(session: Session, job_id: str) -> JobState | None:
    """The few job fields a poller needs, without loading the spec."""
    row = session.execute(
        select(Job.status, Job.epoch_reached, Job.updated_at, Job.error).where(Job.id == job_id)
    ).first()
    return None if row is None else JobState(row[0], row[1], row[2], row[3])
