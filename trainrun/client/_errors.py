"""Typed client errors: one class per way a call can fail."""

from __future__ import annotations

from typing import Any


class TrainrunClientError(Exception):
    """Base of every error the client raises."""


class SpecFileError(TrainrunClientError, ValueError):
    """A spec file that cannot be read or is not a mapping."""


class ConnectionFailed(TrainrunClientError):
    """The service could not be reached (after the retries)."""


class WaitTimeout(TrainrunClientError, TimeoutError):
    """``wait`` gave up before the job reached a final status."""


class ApiError(TrainrunClientError):
    """The service answered with an error status; ``detail`` is its ``detail`` field."""

    def __init__(self, status_code: int, detail: Any, headers: dict[str, str] | None = None):
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"HTTP {status_code}: {detail}")


class Unauthorized(ApiError):
    """401: no token, or an invalid or revoked one."""


class NotFound(ApiError):
    """404: no such job (or not yours), or no model yet."""


class Conflict(ApiError):
    """409: the request conflicts with the job's state."""


class ValidationFailed(ApiError):
    """422: ``errors`` is the detail list; each has ``loc`` (the path into the spec) and ``msg``."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        if isinstance(self.detail, list):
            return [e for e in self.detail if isinstance(e, dict)]
        return [{"loc": [], "msg": str(self.detail)}]

    @property
    def paths(self) -> list[str]:
        """Field paths into the spec, e.g. ``training.epochs`` (the leading ``body`` dropped)."""
        return [field_path(e.get("loc", [])) for e in self.errors]

    def __str__(self) -> str:
        lines = [f"{field_path(e.get('loc', [])) or '<spec>'}: {e.get('msg')}" for e in self.errors]
        return "invalid spec: " + "; ".join(lines)


class RateLimited(ApiError):
    """429: ``retry_after`` is the seconds the service asked to wait."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ServerError(ApiError):
    """5xx: the service failed."""


def field_path(loc: Any) -> str:
    parts = list(loc) if isinstance(loc, list | tuple) else [loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def error_for(status_code: int, detail: Any, headers: dict[str, str]) -> ApiError:
    cls: type[ApiError]
    if status_code == 401:
        cls = Unauthorized
    elif status_code == 404:
        cls = NotFound
    elif status_code == 409:
        cls = Conflict
    elif status_code == 422:
        cls = ValidationFailed
    elif status_code == 429:
        cls = RateLimited
    elif status_code >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status_code, detail, headers)
