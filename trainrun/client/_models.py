"""Typed results. Unknown fields are ignored, so a newer service does not break an older client."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainrun.client.sse import ServerSentEvent

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Job(_Model):
    id: str
    name: str
    owner: str
    status: str
    attempt: int
    epoch: int = Field(description="last epoch whose figures are stored")
    epochs_total: int
    parameter_count: int
    cancel_requested: bool
    error: str | None = None
    worker: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    duration_seconds: float | None = None
    spec: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class JobPage(_Model):
    data: list[Job]
    next_cursor: str | None = None


class Curves(_Model):
    job_id: str
    status: str
    task: str
    epochs: list[int]
    series: dict[str, dict[str, list[float | None]]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per (epoch, phase) with that phase's metrics: the tidy long form."""
        out: list[dict[str, Any]] = []
        for i, epoch in enumerate(self.epochs):
            for phase, metrics in self.series.items():
                values = {m: v[i] for m, v in metrics.items()}
                if any(v is not None for v in values.values()):
                    out.append({"epoch": epoch, "phase": phase, **values})
        return out


class Evidence(_Model):
    epochs: list[int]
    figures: dict[str, Any]


class Finding(_Model):
    code: str
    severity: str
    title: str
    message: str
    evidence: Evidence


class Diagnosis(_Model):
    job_id: str
    status: str
    task: str | None = None
    epoch: int
    summary: str
    findings: list[Finding]


class EpochEvent(_Model):
    """One epoch's figures as streamed: ``phases[phase][metric]`` (``phases["val"]["loss"]``)."""

    epoch: int
    phases: dict[str, dict[str, Any]]
    data: dict[str, Any] = Field(description="the event's JSON as sent")

    @classmethod
    def from_sse(cls, event: ServerSentEvent) -> EpochEvent:
        data = json.loads(event.data) if event.data else {}
        if not isinstance(data, dict):
            data = {"value": data}
        epoch = data.get("epoch", event.id)
        if epoch is None:
            raise ValueError(f"epoch event without an epoch: {event.data!r}")
        phases = data.get("phases")
        if not isinstance(phases, dict):  # figures keyed by phase at the top level
            phases = {k: v for k, v in data.items() if isinstance(v, dict)}
        return cls(epoch=int(epoch), phases=phases, data=data)

    def figure(self, phase: str, metric: str) -> float | None:
        value = self.phases.get(phase, {}).get(metric)
        return float(value) if isinstance(value, int | float) else None


def end_status(event: ServerSentEvent) -> str | None:
    """The final status an ``end`` event carries (JSON ``{"status": ...}`` or a bare word)."""
    try:
        data = json.loads(event.data)
    except ValueError:
        return event.data.strip() or None
    if isinstance(data, dict):
        status = data.get("status")
        return str(status) if status is not None else None
    return str(data) if data is not None else None
