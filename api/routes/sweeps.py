"""Sweeps: many variants of one spec, each run an ordinary job (scheduler: trainrun.sweeps)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from api.deps import CeleryDep, OwnerDep, PrincipalDep, SessionDep, SettingsDep
from api.responses import errors, query_error
from api.routes.compare import compare_jobs
from api.routes.curves import MaxPoints, MetricParam, PhasesParam
from api.routes.jobs import IdempotencyKey, ring_after_commit
from api.routes.jobs import _check_dataset_access as check_dataset_access
from api.sweep_schemas import (
    COMPARE_LIMIT,
    SweepDiagnosisPublic,
    SweepPublic,
    SweepsPublic,
    SweepSummaryPublic,
)
from trainrun.db import queries, sweep_queries
from trainrun.db.engine import transaction
from trainrun.db.tables import Sweep
from trainrun.errors import NotFound, SpecError
from trainrun.sweeps.diagnosis import RunEvidence, diagnose_sweep, find_val_beats_train
from trainrun.sweeps.expand import SweepInvalid, variant_error
from trainrun.sweeps.leaderboard import ranked_job_ids
from trainrun.sweeps.prepare import prepare_runs
from trainrun.sweeps.spec import SweepSpec
from trainrun.sweeps.view import load_state, load_summaries

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


def valid_sweep(sweep_id: str, session: SessionDep, owner: OwnerDep) -> Sweep:
    return sweep_queries.get_sweep(session, sweep_id, owner)


SweepDep = Annotated[Sweep, Depends(valid_sweep)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SweepPublic)
def create_sweep(
    body: SweepSpec,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepPublic:
    """Expand, validate and dry-build every variant; store them; queue the first
    ``max_concurrent``. A 422 names the variant (``loc: [body, variants, i, ...]``)."""
    spec = body.model_dump(mode="json", by_alias=True)
    if idempotency_key is not None:
        earlier = sweep_queries.find_idempotent_sweep(
            session, principal.owner, idempotency_key, spec
        )
        if earlier is not None:
            response.status_code = status.HTTP_200_OK
            response.headers["Location"] = f"/v1/sweeps/{earlier.id}"
            return SweepPublic.of_state(load_state(session, earlier))
    queries.check_active_quota(session, principal.owner, settings.limits.max_active_jobs_per_owner)
    try:
        prepared = prepare_runs(body, settings.limits)
        errors = []
        for p in prepared:
            try:
                check_dataset_access(session, p.spec, principal.visible_owner)
            except SpecError as exc:
                errors.append(
                    variant_error(p.run.variant, exc.loc, exc.message, p.run.overrides, "spec")
                )
        if errors:
            raise SweepInvalid(errors)
    except SweepInvalid as exc:
        raise RequestValidationError(exc.errors) from None
    sweep = sweep_queries.create_sweep(
        session,
        name=body.name,
        spec=spec,
        owner=principal.owner,
        max_concurrent=body.max_concurrent,
        runs=[
            (
                p.run.variant,
                p.run.repeat,
                p.run.seed,
                p.run.overrides,
                p.spec.model_dump(mode="json"),
                p.parameter_count,
            )
            for p in prepared
        ],
        idempotency_key=idempotency_key,
    )
    for job_id in sweep_queries.launch_pending(session, sweep):
        ring_after_commit(session, celery, job_id)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return SweepPublic.of_state(load_state(session, sweep, with_figures=False))


@router.get("", response_model=SweepsPublic)
def list_sweeps(
    session: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> SweepsPublic:
    """Newest first; follow ``next_cursor`` for older sweeps."""
    try:
        page = sweep_queries.list_sweeps(session, owner=owner, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise query_error("cursor", str(exc)) from None
    summaries = load_summaries(session, page.sweeps)
    return SweepsPublic(
        data=[SweepSummaryPublic.of(s, *summaries[s.id]) for s in page.sweeps],
        next_cursor=page.next_cursor,
    )


@router.get("/{sweep_id}", response_model=SweepPublic, responses=errors(404))
def get_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    """Status, counts by state, and the leaderboard (seeds aggregated per variant)."""
    return SweepPublic.of_state(load_state(session, sweep))


@router.post("/{sweep_id}/cancel", response_model=SweepPublic, responses=errors(404))
def cancel_sweep(sweep: SweepDep, session: SessionDep) -> SweepPublic:
    """Waiting runs are cancelled at once; running ones stop between batches."""
    sweep_queries.cancel_sweep(session, sweep)
    return SweepPublic.of_state(load_state(session, sweep))


@router.get("/{sweep_id}/compare", response_model=None, responses=errors(304, 404))
def compare_sweep(
    request: Request,
    sweep_id: str,
    owner: OwnerDep,
    format: Literal["json", "png", "svg"] = "json",
    metric: MetricParam = None,
    phases: PhasesParam = None,
    max_points: MaxPoints = None,
) -> Response:
    """``/v1/compare`` over the sweep's first 10 runs by rank."""
    with transaction(request.app.state.read_sessionmaker) as session:
        state = load_state(session, sweep_queries.get_sweep(session, sweep_id, owner))
        ids = ranked_job_ids(state.leaderboard(), state.spec.rank_by, COMPARE_LIMIT)
    if not ids:
        raise NotFound(f"sweep {sweep_id} has no launched runs yet")
    return compare_jobs(request, owner, ",".join(ids), format, metric, phases, max_points)


@router.get("/{sweep_id}/diagnosis", response_model=SweepDiagnosisPublic, responses=errors(404))
def sweep_diagnosis(sweep: SweepDep, session: SessionDep) -> SweepDiagnosisPublic:
    """Per variant the train-mode vs eval-mode gap and val_beats_train; the gap against the
    swept parameter (Spearman) when one numeric parameter is swept."""
    state = load_state(session, sweep)
    evidence = []
    for (run, job), record in zip(state.runs, state.records, strict=True):
        rows = state.figures.get(job.id, []) if job else []
        finding = find_val_beats_train(run.spec, rows, job.status, job.error) if job else None
        evidence.append(RunEvidence(record, finding))
    result = diagnose_sweep(evidence)
    return SweepDiagnosisPublic.model_validate(
        {"sweep_id": sweep.id, "status": state.status, **result}
    )
