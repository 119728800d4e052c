"""JSON log lines (``TRAINRUN_LOG_FORMAT=json``): one object per line, with the job in context.

The worker binds ``job_id`` and ``attempt`` around a job (``bind_job``); every record logged
from that thread while bound carries them. Threads started inside (the heartbeat) do not
inherit the binding: ``threading.Thread`` starts with an empty context.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

_job: ContextVar[tuple[str, int] | None] = ContextVar("trainrun_job", default=None)


def bind_job(job_id: str, attempt: int) -> Token[tuple[str, int] | None]:
    return _job.set((job_id, attempt))


def unbind_job(token: Token[tuple[str, int] | None]) -> None:
    _job.reset(token)


class JsonFormatter(logging.Formatter):
    """time, level, logger, message; job_id and attempt when bound; exc_info when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = _job.get()
        if job is not None:
            entry["job_id"], entry["attempt"] = job
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json_logs() -> None:
    """Give every handler of the root logger the JSON formatter."""
    formatter = JsonFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
