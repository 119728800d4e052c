"""Derived figures: averages computed from the stored sufficient statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLASSIFICATION_METRICS = ("loss", "accuracy", "tie_rate", "penalty")
REGRESSION_METRICS = ("loss", "mse", "mae", "r2", "penalty")


def derive(row: dict[str, Any]) -> dict[str, float | None]:
    """Averages from sufficient statistics: what the API serves."""
    n = row.get("n") or 0
    out: dict[str, float | None] = {
        "loss": row["loss_sum"] / n if n else None,
        "penalty": row.get("penalty"),
    }
    if row.get("correct") is not None:
        out["accuracy"] = row["correct"] / n if n else None
        out["tie_rate"] = (row.get("ties") or 0) / n if n else None
    if row.get("sse") is not None:
        count = row.get("target_count") or 0
        if count:
            mean = row["target_sum"] / count
            total = row["target_sq_sum"] - count * mean * mean
            out["mse"] = row["sse"] / count
            out["mae"] = row["sae"] / count
            out["r2"] = 1.0 - row["sse"] / total if total > 0 else None
    return out


PHASE_ORDER = ("train", "train_eval", "val", "test")


def columnar_curves(rows: Sequence[Any], task: str) -> dict[str, Any]:
    """Epochs plus one series per phase and metric, aligned on the epochs (None where absent)."""
    metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    epochs = sorted({r.epoch for r in rows})
    position = {e: i for i, e in enumerate(epochs)}
    series: dict[str, dict[str, list[float | None]]] = {}
    for r in rows:
        phase = series.setdefault(r.phase, {m: [None] * len(epochs) for m in metrics})
        derived = derive({c: getattr(r, c) for c in STAT_COLUMNS})
        for m in metrics:
            phase[m][position[r.epoch]] = derived.get(m)
    ordered = {p: series[p] for p in PHASE_ORDER if p in series}
    return {"epochs": epochs, "series": ordered}


STAT_COLUMNS = (
    "n",
    "loss_sum",
    "penalty",
    "correct",
    "ties",
    "sse",
    "sae",
    "target_sum",
    "target_sq_sum",
    "target_count",
)
