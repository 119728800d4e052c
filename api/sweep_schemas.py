"""Response schemas of ``/v1/sweeps``: summaries, the leaderboard, the sweep diagnosis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from trainrun.db.tables import Sweep
from trainrun.sweeps.leaderboard import ranked_job_ids
from trainrun.sweeps.view import SweepState

COMPARE_LIMIT = 10  # what /v1/compare takes at once


class Spread(BaseModel):
    mean: float | None
    std: float | None = Field(description="sample standard deviation over seeds (null: < 2)")
    n: int


class RunPublic(BaseModel):
    job_id: str | None = Field(description="null until the run gets a slot")
    repeat: int
    seed: int | None
    state: str = Field(
        description="pending | queued | running | succeeded | stopped (median rule) | failed | "
        "timed_out | cancelled"
    )
    epoch: int
    epochs_total: int
    best_epoch: int | None
    best_value: float | None
    final: dict[str, dict[str, float | None]] = Field(description="phase -> last epoch's figures")
    stop_reason: str | None


class VariantPublic(BaseModel):
    rank: int | None = Field(description="1 is best by rank_by; null: no value yet")
    variant: int
    overrides: dict[str, Any]
    seeds: list[int]
    states: dict[str, int]
    best: Spread = Field(description="each run's best rank_by value, over seeds")
    final: dict[str, dict[str, Spread]] = Field(description="phase -> metric -> over seeds")
    runs: list[RunPublic]


class SweepSummaryPublic(BaseModel):
    id: str
    name: str
    owner: str
    status: str = Field(description="running | succeeded | failed | cancelled | partial")
    counts: dict[str, int] = Field(description="runs by state")
    runs_total: int
    max_concurrent: int
    cancel_requested: bool
    created_at: datetime

    @classmethod
    def of(cls, sweep: Sweep, status: str, counts: dict[str, int]) -> SweepSummaryPublic:
        return cls(
            id=sweep.id,
            name=sweep.name,
            owner=sweep.owner,
            status=status,
            counts=counts,
            runs_total=sweep.runs_total,
            max_concurrent=sweep.max_concurrent,
            cancel_requested=sweep.cancel_requested,
            created_at=sweep.created_at,
        )


class SweepPublic(SweepSummaryPublic):
    rank_by: dict[str, Any]
    median_stopping: dict[str, Any] | None
    leaderboard: list[VariantPublic]
    compare_url: str | None = Field(description="/v1/compare for the first 10 runs by rank")
    compare_page: str | None = Field(description="the web page comparing them")
    spec: dict[str, Any]

    @classmethod
    def of_state(cls, state: SweepState) -> SweepPublic:
        board = state.leaderboard()
        ids = ",".join(ranked_job_ids(board, state.spec.rank_by, COMPARE_LIMIT))
        stopping = state.spec.median_stopping
        summary = SweepSummaryPublic.of(state.sweep, state.status, state.counts)
        return cls(
            **summary.model_dump(),
            rank_by=state.spec.rank_by.model_dump() | {"maximize": state.spec.rank_by.maximize},
            median_stopping=stopping.model_dump() if stopping else None,
            leaderboard=[VariantPublic.model_validate(e) for e in board],
            compare_url=f"/v1/compare?ids={ids}" if ids else None,
            compare_page=f"/#/compare?ids={ids}" if ids else None,
            spec=state.sweep.spec,
        )


class SweepsPublic(BaseModel):
    data: list[SweepSummaryPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class GapFindingPublic(BaseModel):
    job_id: str | None
    seed: int | None
    severity: str
    title: str
    message: str
    epochs: list[int]
    figures: dict[str, Any]


class VariantGapPublic(BaseModel):
    variant: int
    overrides: dict[str, Any]
    job_ids: list[str]
    accuracy_gap: float | None = Field(description="train_eval - train accuracy (mean)")
    loss_gap: float | None = Field(description="train - train_eval loss (mean)")
    epochs_used: int = Field(description="last epochs averaged per run")
    val_beats_train: list[GapFindingPublic]


class GapSummaryPublic(BaseModel):
    swept: list[str] = Field(description="override paths that differ between variants")
    gap: str = Field(description="the gap related to the parameter: accuracy_gap or loss_gap")
    parameter: str | None = Field(description="the one numeric swept parameter, if so")
    by_value: list[dict[str, float | None]]
    spearman: float | None = Field(description="rank correlation of parameter and gap")
    text: str


class SweepDiagnosisPublic(BaseModel):
    sweep_id: str
    status: str
    variants: list[VariantGapPublic]
    summary: GapSummaryPublic
