"""A sweep as the API serves it: its runs' states and curves, read in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from trainrun.db import sweep_queries
from trainrun.db.tables import EpochFigures, Job, Sweep, SweepVariant
from trainrun.figures import STAT_COLUMNS, derive
from trainrun.sweeps.leaderboard import (
    Curves,
    RunRecord,
    leaderboard,
    run_state,
    state_counts,
    sweep_status,
)
from trainrun.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class SweepState:
    sweep: Sweep
    spec: SweepSpec
    runs: list[tuple[SweepVariant, Job | None]]
    records: list[RunRecord]
    figures: dict[str, list[EpochFigures]]  # job id -> its stored rows

    @property
    def status(self) -> str:
        return sweep_status([r.state for r in self.records], self.sweep.cancel_requested)

    @property
    def counts(self) -> dict[str, int]:
        return state_counts([r.state for r in self.records])

    def leaderboard(self) -> list[dict[str, Any]]:
        return leaderboard(self.records, self.spec.rank_by)


def curves_of(rows: Sequence[EpochFigures]) -> Curves:
    curves: Curves = {}
    for row in rows:
        derived = derive({c: getattr(row, c) for c in STAT_COLUMNS})
        curves.setdefault(row.phase, {})[row.epoch] = derived
    return curves


def record_of(run: SweepVariant, job: Job | None, rows: Sequence[EpochFigures]) -> RunRecord:
    return RunRecord(
        variant=run.variant,
        repeat=run.repeat,
        seed=run.seed,
        overrides=run.overrides,
        state=run_state(run.state, job.status if job else None, run.stop_reason),
        job_id=job.id if job else None,
        epoch=job.epoch_reached if job else 0,
        epochs_total=job.epochs_total if job else run.spec.get("training", {}).get("epochs", 0),
        stop_reason=run.stop_reason,
        curves=curves_of(rows),
    )


def load_state(session: Session, sweep: Sweep, with_figures: bool = True) -> SweepState:
    runs = sweep_queries.sweep_runs(session, [sweep.id])
    figures: dict[str, list[EpochFigures]] = {}
    job_ids = [j.id for _, j in runs if j is not None]
    if with_figures and job_ids:
        for row in sweep_queries.figures_for_jobs(session, job_ids):
            figures.setdefault(row.job_id, []).append(row)
    records = [record_of(r, j, figures.get(j.id, []) if j else []) for r, j in runs]
    return SweepState(sweep, SweepSpec.model_validate(sweep.spec), runs, records, figures)


def load_summaries(
    session: Session, sweeps: Sequence[Sweep]
) -> dict[str, tuple[str, dict[str, int]]]:
    """Each sweep's status and counts, without reading figures."""
    by_sweep: dict[str, list[str]] = {s.id: [] for s in sweeps}
    for run, job in sweep_queries.sweep_runs(session, [s.id for s in sweeps]):
        by_sweep[run.sweep_id].append(
            run_state(run.state, job.status if job else None, run.stop_reason)
        )
    return {
        s.id: (sweep_status(by_sweep[s.id], s.cancel_requested), state_counts(by_sweep[s.id]))
        for s in sweeps
    }
