"""Response schemas, named by role (``JobPublic``, ``JobsPublic``, ``CurvesPublic``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from trainrun.db.tables import Job


class JobPublic(BaseModel):
    id: str
    name: str
    owner: str
    status: str
    attempt: int
    epoch: int = Field(description="last epoch whose figures are stored")
    epochs_total: int
    parameter_count: int
    cancel_requested: bool
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    duration_seconds: float | None = Field(description="from start to finish, or to now")
    spec: dict[str, Any]

    @classmethod
    def of(cls, job: Job, now: datetime) -> JobPublic:
        duration = None
        if job.started_at is not None:
            duration = ((job.finished_at or now) - job.started_at).total_seconds()
        return cls(
            id=job.id,
            name=job.name,
            owner=job.owner,
            status=job.status,
            attempt=job.attempt,
            epoch=job.epoch_reached,
            epochs_total=job.epochs_total,
            parameter_count=job.parameter_count,
            cancel_requested=job.cancel_requested,
            error=job.error,
            worker=job.worker,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            duration_seconds=duration,
            spec=job.spec,
        )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class SamplingPublic(BaseModel):
    method: str = Field(description="minmax: per bucket, each series' min and max epochs kept")
    buckets: int
    epochs_total: int = Field(description="epochs stored; `epochs` holds a subset of them")
    points: int = Field(description="epochs returned")


class CurvesPublic(BaseModel):
    job_id: str
    status: str
    task: str
    epochs: list[int]
    series: dict[str, dict[str, list[float | None]]] = Field(
        description="phase -> metric -> values aligned with `epochs` (null where not measured)"
    )
    sampling: SamplingPublic | None = Field(
        default=None, description="how `epochs` was downsampled (?max_points=); null: every epoch"
    )
