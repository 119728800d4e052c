"""A job's curves: columnar JSON (optionally downsampled), CSV at full fidelity, PNG and SVG."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from api.caching import cache_headers, job_etag, not_modified
from api.curve_cache import CurveCache
from api.deps import JobDep, OwnerDep, SessionDep
from api.responses import errors, query_error
from api.schemas import CurvesPublic
from trainrun.datasets import DATASETS
from trainrun.db import curve_blocks, curve_queries, queries
from trainrun.db.engine import transaction
from trainrun.db.tables import Job
from trainrun.downsample import minmax_downsample
from trainrun.figures import (
    PHASE_ORDER,
    STAT_COLUMNS,
    CurveArrays,
    classified,
    curve_arrays,
    derive,
    metrics_for,
)
from trainrun.plots import MEDIA_TYPES, ImageFormat, render_curves

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ALL_METRICS = tuple(dict.fromkeys(metrics_for("classification") + metrics_for("regression")))
SinceEpoch = Annotated[
    int, Query(ge=0, description="only epochs after this one (polling fallback to /events)")
]
MaxPoints = Annotated[
    int | None,
    Query(ge=4, le=1_000_000, description="downsample to at most this many epochs (min/max)"),
]
PhasesParam = Annotated[
    str | None, Query(max_length=100, description="comma-separated, e.g. train,val")
]
MetricParam = Annotated[
    str | None, Query(max_length=200, description="comma-separated metrics (default: all)")
]


def pick(value: str | None, allowed: Sequence[str], what: str) -> list[str] | None:
    """A comma-separated query value checked against ``allowed`` (None: not given)."""
    if value is None or not value.strip():
        return None
    chosen = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise query_error(
            "phases" if what == "phase" else what,  # the query parameter's name
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}",
        )
    return chosen


def task_of(job: Job, correct: Sequence[Any] | np.ndarray) -> str:
    """From the stored figures' ``correct`` column; before the first epoch, from the dataset."""
    if len(correct):
        return "classification" if classified(correct) else "regression"
    source = job.spec.get("data", {}).get("source")
    return DATASETS[source].info.get("task", "classification") if source in DATASETS else ""


def load_curves(
    session: Session, job: Job, since_epoch: int = 0, cache: CurveCache | None = None
) -> tuple[str, CurveArrays]:
    if cache is None:
        arrays = curve_blocks.figure_arrays(session, job.id, since_epoch, job.epoch_reached)
    else:
        arrays = cache.arrays(session, job)
        if since_epoch:
            start = int(np.searchsorted(arrays["epoch"], since_epoch, side="right"))
            arrays = {c: v[start:] for c, v in arrays.items()}
    task = task_of(job, arrays["correct"])
    return task, curve_arrays(arrays, task)


def downsample(
    curves: CurveArrays, max_points: int | None
) -> tuple[CurveArrays, dict[str, Any] | None]:
    """The min/max envelope when more than ``max_points`` epochs are stored, and how it was cut."""
    picked = None if max_points is None else minmax_downsample(curves.columns(), max_points)
    if picked is None:
        return curves, None
    rows, how = picked
    return curves.take(rows), dataclasses.asdict(how)


def json_response(body: dict[str, Any], headers: dict[str, str]) -> Response:
    # Serialised straight from the arrays: no model validation or lists of 10^5 floats.
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        media_type="application/json",
        headers=headers,
    )


@router.get("/{job_id}/curves", response_model=CurvesPublic, responses=errors(304, 404))
def get_curves(
    job: JobDep,
    session: SessionDep,
    request: Request,
    since_epoch: SinceEpoch = 0,
    max_points: MaxPoints = None,
) -> Response:
    """Columnar per-epoch figures: ``epochs`` and ``series[phase][metric]``."""
    variant = f"json:{since_epoch}:{max_points}"
    headers = cache_headers([job], job_etag([job], variant))
    if (cached := not_modified(request, headers)) is not None:
        return cached
    cache: CurveCache = request.app.state.curve_cache
    if (body := cache.response(job, variant)) is not None:
        return Response(body, media_type="application/json", headers=headers)
    task, curves = load_curves(session, job, since_epoch, cache)
    curves, sampling = downsample(curves, max_points)
    fields = {"job_id": job.id, "status": job.status, "task": task, **curves.to_json_fields()}
    response = json_response({**fields, "sampling": sampling}, headers)
    cache.keep_response(job, variant, bytes(response.body))
    return response


def _cell(value: Any) -> Any:
    return "" if value is None else value


@router.get(
    "/{job_id}/curves.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "one row per epoch and phase"},
        **errors(304, 404),
    },
)
def get_curves_csv(job: JobDep, session: SessionDep, request: Request) -> Response:
    """Every stored row at full fidelity: sufficient statistics, then the derived metrics."""
    headers = cache_headers([job], job_etag([job], "csv"))
    if (cached := not_modified(request, headers)) is not None:
        return cached
    names = curve_queries.CSV_COLUMNS
    columns = curve_queries.figure_columns(session, job.id, names=names)
    task = task_of(job, columns["correct"])
    metrics = [m for m in metrics_for(task) if m not in names]  # not penalty
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, *metrics])
    for row in zip(*(columns[c] for c in names), strict=True):
        derived = derive(dict(zip(STAT_COLUMNS, row[3 : 3 + len(STAT_COLUMNS)], strict=True)))
        writer.writerow([*map(_cell, row), *(_cell(derived.get(m)) for m in metrics)])
    headers["Content-Disposition"] = f'attachment; filename="curves-{job.id}.csv"'
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _image(
    job_id: str,
    owner: str | None,
    request: Request,
    fmt: ImageFormat,
    phases: str | None,
    metric: str | None,
) -> Response:
    chosen_phases = pick(phases, PHASE_ORDER, "phase") or list(PHASE_ORDER)
    chosen_metrics = pick(metric, ALL_METRICS, "metric")
    # A short transaction of its own: rendering takes a while and must not hold it open.
    with transaction(request.app.state.read_sessionmaker) as session:
        job = queries.get_job(session, job_id, owner)
        variant = f"{fmt}:{chosen_phases}:{chosen_metrics}"
        headers = cache_headers([job], job_etag([job], variant))
        if (cached := not_modified(request, headers)) is not None:
            return cached
        task, curves = load_curves(session, job, cache=request.app.state.curve_cache)
    metrics = chosen_metrics or list(metrics_for(task))
    title = f"{job.name} ({job.id[:8]}, {job.status})"
    image = render_curves(curves, metrics, title, fmt, chosen_phases)
    return Response(image, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/{job_id}/curves.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "a panel per metric"},
        **errors(304, 404),
    },
)
def get_curves_png(
    job_id: str,
    owner: OwnerDep,
    request: Request,
    phases: PhasesParam = None,
    metric: MetricParam = None,
) -> Response:
    """The curves drawn as a PNG: a panel per metric, the phases on shared axes."""
    return _image(job_id, owner, request, "png", phases, metric)


@router.get(
    "/{job_id}/curves.svg",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}}, "description": "a panel per metric"},
        **errors(304, 404),
    },
)
def get_curves_svg(
    job_id: str,
    owner: OwnerDep,
    request: Request,
    phases: PhasesParam = None,
    metric: MetricParam = None,
) -> Response:
    """The curves drawn as an SVG: a panel per metric, the phases on shared axes."""
    return _image(job_id, owner, request, "svg", phases, metric)
