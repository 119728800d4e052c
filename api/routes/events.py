"""Live curves: Server-Sent Events, one ``epoch`` event per stored epoch, then ``end``.

The stream polls the database (the figures table is the source of truth, written by workers
on other machines) with a fresh short transaction per poll, so no transaction stays open while
it waits. Event ids are epochs: a client that reconnects with ``Last-Event-ID`` (browsers do
this by themselves) gets only the epochs after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic_core import to_json
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep
from api.responses import errors
from trainrun.db import curve_queries, queries
from trainrun.db.curve_queries import JobState
from trainrun.db.engine import transaction
from trainrun.db.tables import JobStatus
from trainrun.figures import PHASE_ORDER, STAT_COLUMNS, derive, metrics_for

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class StreamSettings(BaseSettings):
    """``TRAINRUN_EVENTS_*``: how often a stream polls, pings, and how long it may stay open."""

    model_config = SettingsConfigDict(env_prefix="TRAINRUN_EVENTS_", extra="ignore")

    poll_seconds: float = 0.5
    keepalive_seconds: float = 15.0
    # Bounds how long a stream can delay a graceful shutdown; clients resume by Last-Event-ID.
    max_stream_seconds: float = 600.0
    retry_ms: int = 2000


@lru_cache
def stream_settings() -> StreamSettings:
    return StreamSettings()


@dataclass(frozen=True)
class Poll:
    state: JobState | None
    columns: dict[str, tuple[Any, ...]]
    test: dict[str, tuple[Any, ...]] | None  # the job's test rows, once it has ended


def _poll(factory: sessionmaker[Session], job_id: str, after: int) -> Poll:
    with transaction(factory) as session:
        # The job first: rows read after a final status are complete, so `end` comes last.
        state = curve_queries.job_state(session, job_id)
        if state is None:
            return Poll(None, {}, None)
        columns: dict[str, tuple[Any, ...]] = {}
        if state.epoch > after:
            columns = curve_queries.figure_columns(session, job_id, since_epoch=after)
        test = None
        if JobStatus(state.status).is_final:
            test = curve_queries.figure_columns(session, job_id, phase="test")
        return Poll(state, columns, test)


def _visible(factory: sessionmaker[Session], job_id: str, owner: str | None) -> None:
    with transaction(factory) as session:
        queries.get_job(session, job_id, owner)


def _phases(columns: dict[str, tuple[Any, ...]]) -> dict[int, dict[str, dict[str, Any]]]:
    """epoch -> phase -> derived metrics (and ``n``), in epoch and phase order."""
    by_epoch: dict[int, dict[str, dict[str, Any]]] = {}
    for i, epoch in enumerate(columns.get("epoch", ())):
        stats = {c: columns[c][i] for c in STAT_COLUMNS}
        task = "classification" if stats["correct"] is not None else "regression"
        derived = derive(stats)
        figures: dict[str, Any] = {m: derived.get(m) for m in metrics_for(task)}
        figures["n"] = stats["n"]
        by_epoch.setdefault(epoch, {})[columns["phase"][i]] = figures
    return {e: {p: phases[p] for p in PHASE_ORDER if p in phases} for e, phases in by_epoch.items()}


def _event(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (
        head.encode()
        + f"event: {name}\ndata: ".encode()
        + to_json(data, inf_nan_mode="null")
        + b"\n\n"
    )


async def _stream(
    request: Request, job_id: str, after: int, cfg: StreamSettings
) -> AsyncIterator[bytes]:
    factory = request.app.state.read_sessionmaker
    yield f"retry: {cfg.retry_ms}\n\n".encode()
    opened = last_write = time.monotonic()
    while True:
        poll = await run_in_threadpool(_poll, factory, job_id, after)
        if poll.state is None:  # deleted under us
            yield _event("end", {"status": "deleted", "epoch": after, "error": None, "test": None})
            return
        for epoch, phases in _phases(poll.columns).items():
            yield _event("epoch", {"epoch": epoch, "phases": phases}, event_id=epoch)
            after = max(after, epoch)
            last_write = time.monotonic()
        if poll.test is not None:
            test = next(iter(_phases(poll.test).items()), None)
            final = {
                "status": poll.state.status,
                "epoch": poll.state.epoch,
                "error": poll.state.error,
                "test": None if test is None else {"epoch": test[0], **test[1]["test"]},
            }
            yield _event("end", final)
            return
        now = time.monotonic()
        if now - opened > cfg.max_stream_seconds or await request.is_disconnected():
            return
        if now - last_write >= cfg.keepalive_seconds:
            yield b": keep-alive\n\n"
            last_write = now
        await asyncio.sleep(cfg.poll_seconds)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`epoch` events (id = epoch, data = that epoch's figures per phase), "
            "then one `end` event with the final status and the test figures",
        },
        **errors(404),
    },
)
async def stream_events(
    job_id: str,
    request: Request,
    owner: OwnerDep,
    last_event_id_header: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    last_event_id: Annotated[
        int | None, Query(ge=0, description="resume after this epoch (for clients without headers)")
    ] = None,
) -> StreamingResponse:
    """Per-epoch figures as they are stored; resumable with ``Last-Event-ID``."""
    await run_in_threadpool(
        _visible, request.app.state.read_sessionmaker, job_id, owner
    )  # 404s here
    after = max(last_event_id_header or 0, last_event_id or 0)
    return StreamingResponse(
        _stream(request, job_id, after, stream_settings()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
