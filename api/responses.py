"""The error responses routes declare in OpenAPI (``responses=errors(404, 409)``).

Domain errors render as ``{"detail": "<message>"}`` (``api.errors``); 422s keep FastAPI's
list shape (``HTTPValidationError``), so FastAPI's own 422 declaration is left in place.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status
from pydantic import BaseModel


class ErrorPublic(BaseModel):
    detail: str


DESCRIPTIONS = {
    304: "Not Modified: the `If-None-Match` ETag is current",
    400: "a body that cannot be parsed (not UTF-8, malformed multipart)",
    401: "missing, invalid or revoked bearer token",
    404: "not found (or another owner's)",
    409: "conflicts with the resource's state",
    413: "request body over the size limit",
    415: "unsupported media type",
    429: "rate limit or active-jobs quota exceeded",
    503: "a dependency is unavailable",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {
        "Retry-After": {
            "schema": {"type": "string"},
            "description": "seconds to wait (rate limit only)",
        }
    },
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for these status codes (304 has no body)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"description": DESCRIPTIONS[code]}
        if code != 304:
            entry["model"] = ErrorPublic
        if code in HEADERS:
            entry["headers"] = HEADERS[code]
        out[code] = entry
    return out


def validation_error(description: str) -> dict[str, Any]:
    """A 422 entry for a route FastAPI does not give one (it has no declared parameters)."""
    ref = {"$ref": "#/components/schemas/HTTPValidationError"}  # FastAPI's own schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def query_error(name: str, message: str) -> HTTPException:
    """A 422 for a query parameter, in the shape of FastAPI's own validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"type": "value_error", "loc": ["query", name], "msg": message}],
    )
