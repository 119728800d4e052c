"""Jobs: submit, list, read, cancel (curves: ``curves.py``, live events: ``events.py``)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import CeleryDep, JobDep, OwnerDep, PrincipalDep, SessionDep, SettingsDep
from api.responses import errors, query_error
from api.schemas import JobPublic, JobsPublic
from trainrun.db import dataset_queries, queries
from trainrun.db.tables import JobStatus, utcnow
from trainrun.errors import NotFound, SpecError
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


def _check_dataset_access(session: Session, spec: JobSpec, owner: str | None) -> None:
    """An uploaded dataset is usable only by the owner who can see it."""
    dataset_id = getattr(spec.data.params, "dataset_id", None)
    if dataset_id is None:
        return
    try:
        dataset_queries.get_dataset(session, dataset_id, owner)
    except NotFound:
        raise SpecError(("data", "params", "dataset_id"), f"no dataset {dataset_id}") from None


IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="a retried submit with the same key and spec returns the same job",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses={
        200: {"description": "an earlier submit with this Idempotency-Key", "model": JobPublic},
        **errors(400, 413),
    },
)
def create_job(
    spec: JobSpec,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Validate and dry-build the spec, store the job, then queue it."""
    body = spec.model_dump(mode="json")
    # Plan first, holding no database connection: under load the CPU-bound dry build would
    # otherwise keep a pooled connection checked out and starve every other request.
    _check_dataset_access(session, spec, principal.visible_owner)  # before its file is read
    plan = plan_job(spec, settings.limits)
    if idempotency_key is not None:
        earlier = queries.find_idempotent(session, principal.owner, idempotency_key, body)
        if earlier is not None:
            response.status_code = status.HTTP_200_OK
            response.headers["Location"] = f"/v1/jobs/{earlier.id}"
            return JobPublic.of(earlier, utcnow())
    queries.check_active_quota(session, principal.owner, settings.limits.max_active_jobs_per_owner)
    try:
        with session.begin_nested():
            job = queries.create_job(
                session,
                name=spec.name,
                spec=body,
                owner=principal.owner,
                epochs_total=spec.training.epochs,
                parameter_count=plan.parameter_count,
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        # A concurrent submit with the same key won the race: answer with its job.
        if idempotency_key is None:
            raise
        earlier = queries.find_idempotent(session, principal.owner, idempotency_key, body)
        if earlier is None:
            raise
        response.status_code = status.HTTP_200_OK
        response.headers["Location"] = f"/v1/jobs/{earlier.id}"
        return JobPublic.of(earlier, utcnow())
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
        raise query_error("cursor", str(exc)) from None
    now = utcnow()
    return JobsPublic(data=[JobPublic.of(j, now) for j in page.jobs], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=errors(404))
def get_job(job: JobDep) -> JobPublic:
    return JobPublic.of(job, utcnow())


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=errors(404))
def cancel_job(job: JobDep, session: SessionDep) -> JobPublic:
    """A queued job is cancelled at once; a running one stops between batches."""
    return JobPublic.of(queries.request_cancel(session, job), utcnow())
