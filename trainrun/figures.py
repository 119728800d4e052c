"""Derived figures: averages computed from the stored sufficient statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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


def metrics_for(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


@dataclass(frozen=True)
class CurveArrays:
    """Epochs plus one float array per phase and metric, aligned on the epochs."""

    epochs: np.ndarray  # (E,) int64, ascending
    series: dict[str, dict[str, np.ndarray]]  # phase -> metric -> (E,) float64, NaN: not measured

    def take(self, rows: np.ndarray) -> CurveArrays:
        """Only the epochs at these row positions."""
        return CurveArrays(
            self.epochs[rows],
            {p: {m: v[rows] for m, v in metrics.items()} for p, metrics in self.series.items()},
        )

    def columns(self) -> list[np.ndarray]:
        return [v for metrics in self.series.values() for v in metrics.values()]

    def to_json_fields(self) -> dict[str, Any]:
        """``epochs`` and ``series`` as arrays, for ``orjson`` with ``OPT_SERIALIZE_NUMPY``
        (which writes NaN as null)."""
        return {"epochs": self.epochs, "series": self.series}


def derive_arrays(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``derive`` over whole columns at once; NaN wherever ``derive`` gives None."""
    n = stats["n"]
    nan = np.float64("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        counted = n > 0
        out = {
            "loss": np.where(counted, stats["loss_sum"] / n, nan),
            "penalty": stats["penalty"],
        }
        correct = stats["correct"]
        classified = counted & ~np.isnan(correct)
        out["accuracy"] = np.where(classified, correct / n, nan)
        out["tie_rate"] = np.where(classified, np.nan_to_num(stats["ties"]) / n, nan)
        count = np.nan_to_num(stats["target_count"])
        sse = stats["sse"]
        regressed = (count > 0) & ~np.isnan(sse)
        mean = stats["target_sum"] / count
        total = stats["target_sq_sum"] - count * mean * mean
        out["mse"] = np.where(regressed, sse / count, nan)
        out["mae"] = np.where(regressed, stats["sae"] / count, nan)
        out["r2"] = np.where(regressed & (total > 0), 1.0 - sse / total, nan)
    return out


def curve_arrays(columns: Mapping[str, np.ndarray], task: str) -> CurveArrays:
    """Figure arrays (``epoch``, ``phase`` as an index in ``PHASE_ORDER``, ``STAT_COLUMNS``
    with NaN for null) -> curves aligned on the epochs."""
    metrics = metrics_for(task)
    epochs, position = np.unique(columns["epoch"], return_inverse=True)
    phase = columns["phase"]
    derived = derive_arrays({c: columns[c] for c in STAT_COLUMNS})
    series: dict[str, dict[str, np.ndarray]] = {}
    for code, p in enumerate(PHASE_ORDER):
        mask = phase == code
        if not mask.any():
            continue
        at = position[mask]
        series[p] = {}
        for m in metrics:
            column = np.full(len(epochs), np.nan)
            column[at] = derived[m][mask]
            series[p][m] = column
    return CurveArrays(epochs, series)


def classified(correct: Sequence[Any] | np.ndarray) -> bool:
    """Whether stored figures are a classification's (only those count ``correct``)."""
    return not np.isnan(np.asarray(correct, dtype=np.float64)).all()


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
