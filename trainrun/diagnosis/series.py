"""The figure rows as per-phase, per-epoch points, and the helpers every finding shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from trainrun.diagnosis.schema import ClassPriors, FigureRow
from trainrun.diagnosis.thresholds import ACCURACY_Z, LOSS_REL_TOL
from trainrun.figures import STAT_COLUMNS, derive
from trainrun.spec import JobSpec

EVAL_PHASES = ("train_eval", "val", "test")


@dataclass(frozen=True)
class Point:
    """One phase of one epoch, derived."""

    n: int
    loss: float | None
    penalty: float | None
    accuracy: float | None = None
    tie_rate: float | None = None
    correct: float | None = None
    mse: float | None = None
    r2: float | None = None
    target_sum: float | None = None
    target_sq_sum: float | None = None
    target_count: int | None = None
    finite: bool = True

    def get(self, metric: str) -> float | None:
        value = getattr(self, metric)
        return value if value is not None and math.isfinite(value) else None

    @classmethod
    def of(cls, r: FigureRow) -> Point:
        d = derive({c: getattr(r, c) for c in STAT_COLUMNS})
        raw = [r.loss_sum, r.penalty, r.correct, r.sse, r.sae, r.target_sum, r.target_sq_sum]
        return cls(
            n=r.n or 0,
            loss=d.get("loss"),
            penalty=d.get("penalty"),
            accuracy=d.get("accuracy"),
            tie_rate=d.get("tie_rate"),
            correct=r.correct,
            mse=d.get("mse"),
            r2=d.get("r2"),
            target_sum=r.target_sum,
            target_sq_sum=r.target_sq_sum,
            target_count=r.target_count,
            finite=all(v is None or math.isfinite(v) for v in raw),
        )


def binomial_noise(p: float, *sizes: int) -> float:
    """The smallest accuracy gap that is not noise, for a rate ``p`` measured on ``sizes``."""
    return ACCURACY_Z * math.sqrt(p * (1 - p) * sum(1 / max(n, 1) for n in sizes))


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> float:
        """How much ``a`` is better than ``b`` (negative: worse)."""
        return a - b if self.higher_is_better else b - a

    def tolerance(self, a: Point, b: Point) -> float:
        """The smallest gap between two measurements that is not noise."""
        if self.name == "accuracy":
            total = max(a.n + b.n, 1)
            p = ((a.accuracy or 0.0) * a.n + (b.accuracy or 0.0) * b.n) / total
            # Clamp away from 0 and 1, where the binomial variance would vanish.
            p = min(max(p, 1.0 / total), 1.0 - 1.0 / total)
            return binomial_noise(p, a.n, b.n)
        ref = b.get(self.name) or 0.0
        return LOSS_REL_TOL * abs(ref) + 1e-12


ACCURACY = Metric("accuracy", True)
LOSS = Metric("loss", False)


@dataclass
class Run:
    """The figures by phase and epoch, plus what the spec says about the model."""

    spec: JobSpec
    task: str | None
    curves: dict[str, dict[int, Point]]
    priors: ClassPriors | None
    status: str
    error: str | None
    epochs: list[int] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        spec: JobSpec,
        rows: Sequence[FigureRow],
        status: str,
        error: str | None,
        priors: ClassPriors | None,
    ) -> Run:
        curves: dict[str, dict[int, Point]] = {}
        for r in rows:
            curves.setdefault(r.phase, {})[r.epoch] = Point.of(r)
        task = None
        if rows:
            task = "classification" if any(r.correct is not None for r in rows) else "regression"
        return cls(spec, task, curves, priors, status, error, sorted({r.epoch for r in rows}))

    def at(self, phase: str, epoch: int) -> Point | None:
        return self.curves.get(phase, {}).get(epoch)

    def series(self, phase: str) -> dict[int, Point]:
        return self.curves.get(phase, {})

    def finite(self, phase: str, metric: str = "loss") -> dict[int, Point]:
        """The points of ``phase`` with a finite ``metric``, in stored order."""
        return {e: p for e, p in self.series(phase).items() if p.get(metric) is not None}

    def complete_epochs(self, *phases: str, metric: str = "loss") -> list[int]:
        """The epochs where every one of ``phases`` has a finite ``metric``."""
        return [
            e
            for e in self.epochs
            if all((p := self.at(ph, e)) is not None and p.get(metric) is not None for ph in phases)
        ]

    def point(self, phase: str, epoch: int) -> Point:
        """A point known to exist (callers pick epochs with ``complete_epochs``)."""
        point = self.at(phase, epoch)
        if point is None:
            raise KeyError((phase, epoch))
        return point

    def value(self, phase: str, epoch: int, metric: str) -> float:
        """A finite figure known to exist (callers pick epochs with ``complete_epochs``)."""
        value = self.point(phase, epoch).get(metric)
        if value is None:
            raise KeyError((phase, epoch, metric))
        return value

    def values(self, phase: str, epochs: Sequence[int], metric: str) -> list[float]:
        return [self.value(phase, e, metric) for e in epochs]

    def gaps(self, metric: Metric, a: str, b: str, epochs: Sequence[int]) -> list[float]:
        """Per epoch, how much phase ``a`` is better than phase ``b``."""
        return [
            metric.better(self.value(a, e, metric.name), self.value(b, e, metric.name))
            for e in epochs
        ]

    def tolerance(self, metric: Metric, a: str, b: str, epoch: int) -> float:
        """The noise level of a gap between phases ``a`` and ``b`` at ``epoch``."""
        return metric.tolerance(self.point(a, epoch), self.point(b, epoch))


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def num(x: float | None) -> float | None:
    """A JSON-safe figure: finite, six significant digits."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def fmt(x: float | None) -> str:
    """A figure for a message: four significant digits."""
    return "n/a" if x is None else f"{x:.4g}"


def span(epochs: Sequence[int]) -> str:
    if not epochs:
        return "no epochs"
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    return f"epochs {epochs[0]}-{epochs[-1]}"
