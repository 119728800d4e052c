"""Domain errors. Each carries its HTTP status; the API renders them in one handler."""

from __future__ import annotations

from collections.abc import Sequence


class TrainrunError(Exception):
    status_code = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class SpecError(TrainrunError):
    """A spec that parses but cannot be built or trained; ``loc`` is the path into the spec."""

    status_code = 422

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = tuple(loc)

    def __str__(self) -> str:
        path = ".".join(str(p) for p in self.loc)
        return f"{path}: {self.message}" if path else self.message


class NotFound(TrainrunError):
    status_code = 404


class Conflict(TrainrunError):
    status_code = 409


class Unauthorized(TrainrunError):
    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class TooManyRequests(TrainrunError):
    status_code = 429


class PayloadTooLarge(TrainrunError):
    status_code = 413
