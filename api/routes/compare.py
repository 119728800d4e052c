"""Several jobs side by side (seed 004's plain / BatchNorm / dropout runs): JSON or images."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from api.caching import cache_headers, job_etag, not_modified
from api.deps import OwnerDep
from api.responses import errors, query_error
from api.routes.curves import (
    ALL_METRICS,
    MaxPoints,
    MetricParam,
    PhasesParam,
    downsample,
    json_response,
    load_curves,
    pick,
)
from trainrun.db import queries
from trainrun.db.engine import transaction
from trainrun.figures import PHASE_ORDER, metrics_for
from trainrun.plots import MEDIA_TYPES, Run, render_comparison

router = APIRouter(prefix="/v1", tags=["compare"])

MAX_JOBS = 10
IMAGE_PHASES = ("train_eval", "val")  # the two curves measured under the same rules


def _ids(value: str) -> list[str]:
    ids = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not ids:
        raise query_error("ids", "give at least one job id")
    if len(ids) > MAX_JOBS:
        raise query_error("ids", f"at most {MAX_JOBS} jobs can be compared at once, got {len(ids)}")
    return ids


@router.get(
    "/compare",
    responses={
        200: {
            "content": {"application/json": {}, "image/png": {}, "image/svg+xml": {}},
            "description": "JSON: one entry per job; images: a panel per metric, jobs overlaid",
        },
        **errors(304, 404),
    },
)
def compare_jobs(
    request: Request,
    owner: OwnerDep,
    ids: Annotated[str, Query(max_length=2000, description="comma-separated job ids (<= 10)")],
    format: Literal["json", "png", "svg"] = "json",
    metric: MetricParam = None,
    phases: PhasesParam = None,
    max_points: MaxPoints = None,
) -> Response:
    """Up to 10 jobs' curves; an unknown (or another owner's) id is a 404 naming it."""
    job_ids = _ids(ids)
    chosen_metrics = pick(metric, ALL_METRICS, "metric")
    chosen_phases = pick(phases, PHASE_ORDER, "phase")
    variant = f"compare:{format}:{chosen_metrics}:{chosen_phases}:{max_points}"
    # A short transaction of its own: rendering takes a while and must not hold it open.
    with transaction(request.app.state.read_sessionmaker) as session:
        jobs = [queries.get_job(session, job_id, owner) for job_id in job_ids]
        headers = cache_headers(jobs, job_etag(jobs, variant))
        if (cached := not_modified(request, headers)) is not None:
            return cached
        cache = request.app.state.curve_cache
        loaded = [load_curves(session, job, cache=cache) for job in jobs]

    if format != "json":
        metrics = chosen_metrics or list(
            dict.fromkeys(m for task, _ in loaded for m in metrics_for(task or "classification"))
        )
        runs = [
            Run(f"{job.name} ({job.id[:6]})", curves)
            for job, (_, curves) in zip(jobs, loaded, strict=True)
        ]
        image = render_comparison(runs, metrics, chosen_phases or IMAGE_PHASES, format)
        return Response(image, media_type=MEDIA_TYPES[format], headers=headers)

    entries: list[dict[str, Any]] = []
    for job, (task, curves) in zip(jobs, loaded, strict=True):
        curves, sampling = downsample(curves, max_points)
        body = curves.to_json_fields()
        series = {
            p: {m: v for m, v in values.items() if chosen_metrics is None or m in chosen_metrics}
            for p, values in body["series"].items()
            if chosen_phases is None or p in chosen_phases
        }
        entries.append(
            {
                "id": job.id,
                "name": job.name,
                "status": job.status,
                "task": task,
                "epochs": body["epochs"],
                "series": series,
                "sampling": sampling,
            }
        )
    return json_response({"jobs": entries}, headers)
