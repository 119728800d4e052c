"""Jobs: submit, list, read, curves, cancel."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import event
from sqlalchemy.orm import Session

from api.deps import CeleryDep, JobDep, OwnerDep, SessionDep, SettingsDep
from api.schemas import CurvesPublic, JobPublic, JobsPublic
from trainrun.datasets import DATASETS
from trainrun.db import queries
from trainrun.db.tables import JobStatus, utcnow
from trainrun.errors import TrainrunError
from trainrun.figures import columnar_curves
from trainrun.planning import plan_job
from trainrun.spec import JobSpec
from worker.celery_app import send_run_job

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def ring_after_commit(session: Session, celery: Any, job_id: str) -> None:
    """Send the doorbell only once the row is committed; the row is the real queue."""

    def ring(_: Session) -> None:
        try:
            send_run_job(celery, job_id)
        except Exception as exc:  # broker down: the job stays queued and the reaper re-rings
            log.warning("job %s committed but its message could not be sent: %s", job_id, exc)

    event.listen(session, "after_commit", ring, once=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def create_job(
    spec: JobSpec,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    owner: OwnerDep,
) -> JobPublic:
    """Validate and dry-build the spec, store the job, then queue it."""
    plan = plan_job(spec, settings.limits)
    job = queries.create_job(
        session,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        owner=owner or "anonymous",
        epochs_total=spec.training.epochs,
        parameter_count=plan.parameter_count,
    )
    ring_after_commit(session, celery, job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobPublic.of(job, utcnow())


@router.get("", response_model=JobsPublic)
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobsPublic:
    """Newest first, filtered by status; follow ``next_cursor`` for older jobs."""
    try:
        page = queries.list_jobs(
            session,
            owner=owner,
            status=status_.value if status_ else None,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:
        raise TrainrunError(str(exc)) from None
    now = utcnow()
    return JobsPublic(data=[JobPublic.of(j, now) for j in page.jobs], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job: JobDep) -> JobPublic:
    return JobPublic.of(job, utcnow())


@router.get("/{job_id}/curves", response_model=CurvesPublic)
def get_curves(
    job: JobDep,
    session: SessionDep,
    since_epoch: Annotated[int, Query(ge=0)] = 0,
) -> CurvesPublic:
    """Columnar per-epoch figures: ``epochs`` and ``series[phase][metric]``."""
    rows = queries.figures_for_job(session, job.id, since_epoch)
    if rows:
        task = "classification" if rows[0].correct is not None else "regression"
    else:
        source = job.spec.get("data", {}).get("source")
        task = DATASETS[source].info.get("task", "classification") if source in DATASETS else ""
    return CurvesPublic(job_id=job.id, status=job.status, task=task, **columnar_curves(rows, task))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job: JobDep, session: SessionDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops between batches."""
    return JobPublic.of(queries.request_cancel(session, job), utcnow())
