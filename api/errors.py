"""One handler renders every domain error; spec errors look like FastAPI's own 422s."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from trainrun.errors import SpecError, TrainrunError

log = logging.getLogger(__name__)


def spec_error_detail(exc: SpecError) -> list[dict[str, object]]:
    return [{"type": "spec_invalid", "loc": ["body", *exc.loc], "msg": exc.message}]


async def _trainrun_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TrainrunError)
    if isinstance(exc, SpecError):
        return JSONResponse({"detail": spec_error_detail(exc)}, status_code=exc.status_code)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=exc.headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database refused or dropped the connection, or the pool had none free in time:
    # nothing was committed, so the client may retry (a submit with its Idempotency-Key).
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TrainrunError, _trainrun_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
