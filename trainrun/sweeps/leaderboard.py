"""Rank a sweep's variants by their best ``rank_by`` value, seeds aggregated (mean, std). Pure."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trainrun.diagnosis.series import num
from trainrun.sweeps.spec import RankBy

SUMMARY_PHASES = ("train", "train_eval", "val", "test")
RUN_STATES = (
    "pending",
    "queued",
    "running",
    "succeeded",
    "stopped",
    "failed",
    "timed_out",
    "cancelled",
)
ACTIVE_STATES = frozenset({"pending", "queued", "running"})
Curves = dict[str, dict[int, dict[str, float | None]]]  # phase -> epoch -> metric -> value


@dataclass(frozen=True)
class RunRecord:
    """One run as the leaderboard sees it: its variant, state and derived curves."""

    variant: int
    repeat: int
    seed: int | None
    overrides: dict[str, Any]
    state: str  # RUN_STATES; "stopped": cancelled by the median rule
    job_id: str | None
    epoch: int
    epochs_total: int
    stop_reason: str | None
    curves: Curves = field(default_factory=dict)


def run_state(run_state: str, job_status: str | None, stop_reason: str | None) -> str:
    if job_status is None:
        return "cancelled" if run_state == "cancelled" else "pending"
    if job_status == "cancelled" and stop_reason:
        return "stopped"
    return job_status


def sweep_status(states: Sequence[str], cancel_requested: bool) -> str:
    """running | succeeded | failed | cancelled | partial, from the runs' states."""
    if any(s in ACTIVE_STATES for s in states):
        return "running"
    if cancel_requested or (states and all(s == "cancelled" for s in states)):
        return "cancelled"
    if all(s in ("succeeded", "stopped") for s in states):
        return "succeeded"
    if all(s in ("failed", "timed_out") for s in states):
        return "failed"
    return "partial"


def state_counts(states: Sequence[str]) -> dict[str, int]:
    counts = Counter(states)
    return {s: counts.get(s, 0) for s in RUN_STATES}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def best_of(curves: Curves, rank_by: RankBy) -> tuple[int | None, float | None]:
    """The epoch with the best ``rank_by`` value, and that value."""
    points = [
        (e, v)
        for e, metrics in curves.get(rank_by.phase, {}).items()
        if _finite(v := metrics.get(rank_by.name))
    ]
    if not points:
        return None, None
    sign = 1.0 if rank_by.maximize else -1.0
    epoch, value = max(points, key=lambda p: (sign * float(p[1] or 0.0), -p[0]))
    return epoch, value


def final_figures(curves: Curves) -> dict[str, dict[str, float | None]]:
    """Per phase, the figures of its last stored epoch."""
    out: dict[str, dict[str, float | None]] = {}
    for phase in SUMMARY_PHASES:
        series = curves.get(phase)
        if series:
            out[phase] = {m: num(v) for m, v in series[max(series)].items()}
    return out


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (null below two values) over seeds."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": num(statistics.fmean(values)), "std": num(std), "n": len(values)}


def run_entry(r: RunRecord, rank_by: RankBy) -> dict[str, Any]:
    best_epoch, best_value = best_of(r.curves, rank_by)
    return {
        "job_id": r.job_id,
        "repeat": r.repeat,
        "seed": r.seed,
        "state": r.state,
        "epoch": r.epoch,
        "epochs_total": r.epochs_total,
        "best_epoch": best_epoch,
        "best_value": num(best_value),
        "final": final_figures(r.curves),
        "stop_reason": r.stop_reason,
    }


def _aggregate_final(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    phases = dict.fromkeys(p for r in runs for p in r["final"])
    out: dict[str, dict[str, Any]] = {}
    for phase in phases:
        metrics = dict.fromkeys(m for r in runs for m in r["final"].get(phase, {}))
        out[phase] = {
            m: spread([float(v) for r in runs if _finite(v := r["final"].get(phase, {}).get(m))])
            for m in metrics
        }
    return out


def leaderboard(records: Sequence[RunRecord], rank_by: RankBy) -> list[dict[str, Any]]:
    """One entry per variant, best first; variants without a value yet come last, unranked."""
    by_variant: dict[int, list[RunRecord]] = {}
    for r in records:
        by_variant.setdefault(r.variant, []).append(r)
    entries: list[dict[str, Any]] = []
    for variant, runs in by_variant.items():
        run_entries = [run_entry(r, rank_by) for r in runs]
        bests = [e["best_value"] for e in run_entries if e["best_value"] is not None]
        entries.append(
            {
                "variant": variant,
                "overrides": runs[0].overrides,
                "seeds": [r.seed for r in runs if r.seed is not None],
                "states": state_counts([r.state for r in runs]),
                "best": spread(bests),
                "final": _aggregate_final(run_entries),
                "runs": run_entries,
            }
        )
    sign = -1.0 if rank_by.maximize else 1.0
    entries.sort(
        key=lambda e: (e["best"]["mean"] is None, sign * (e["best"]["mean"] or 0.0), e["variant"])
    )
    for rank, e in enumerate(entries, 1):
        e["rank"] = rank if e["best"]["mean"] is not None else None
    return entries


def ranked_job_ids(entries: Sequence[dict[str, Any]], rank_by: RankBy, limit: int) -> list[str]:
    """Job ids in leaderboard order (within a variant, its best run first)."""
    sign = -1.0 if rank_by.maximize else 1.0
    ids: list[str] = []
    for e in entries:
        runs = sorted(
            e["runs"],
            key=lambda r: (r["best_value"] is None, sign * (r["best_value"] or 0.0), r["repeat"]),
        )
        ids += [r["job_id"] for r in runs if r["job_id"]]
    return ids[:limit]
