"""Typed sweep results (``/v1/sweeps``). Unknown fields are ignored, as for jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from trainrun.client._models import _Model

SWEEP_FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "partial"})


class SweepRun(_Model):
    job_id: str | None = None
    repeat: int = 0
    seed: int | None = None
    state: str
    epoch: int = 0
    epochs_total: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    final: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    stop_reason: str | None = None


class SweepVariant(_Model):
    rank: int | None = None
    variant: int
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)
    states: dict[str, int] = Field(default_factory=dict)
    best: dict[str, Any] = Field(default_factory=dict, description="mean, std, n over seeds")
    final: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    runs: list[SweepRun] = Field(default_factory=list)


class Sweep(_Model):
    id: str
    name: str
    owner: str
    status: str
    counts: dict[str, int] = Field(default_factory=dict)
    runs_total: int
    max_concurrent: int
    cancel_requested: bool = False
    created_at: datetime
    rank_by: dict[str, Any] = Field(default_factory=dict)
    median_stopping: dict[str, Any] | None = None
    leaderboard: list[SweepVariant] = Field(default_factory=list)
    compare_url: str | None = None
    compare_page: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in SWEEP_FINAL_STATUSES

    def runs(self) -> list[tuple[SweepVariant, SweepRun]]:
        """Every run with its variant, in variant order."""
        pairs = [(v, r) for v in self.leaderboard for r in v.runs]
        return sorted(pairs, key=lambda p: (p[0].variant, p[1].repeat))


class SweepPage(_Model):
    data: list[Sweep]
    next_cursor: str | None = None


class SweepDiagnosis(_Model):
    sweep_id: str
    status: str
    variants: list[dict[str, Any]]
    summary: dict[str, Any]
