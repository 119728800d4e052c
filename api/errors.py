"""One handler renders every domain error; spec errors look like FastAPI's own 422s."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from trainrun.errors import SpecError, TrainrunError


def spec_error_detail(exc: SpecError) -> list[dict[str, object]]:
    return [{"type": "spec_invalid", "loc": ["body", *exc.loc], "msg": exc.message}]


async def _trainrun_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TrainrunError)
    if isinstance(exc, SpecError):
        return JSONResponse({"detail": spec_error_detail(exc)}, status_code=exc.status_code)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TrainrunError, _trainrun_error)
