"""``diagnose``: run every check over the figures and summarise what they found."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trainrun.diagnosis.degenerate import degenerate
from trainrun.diagnosis.divergence import diverged
from trainrun.diagnosis.not_learning import not_learning
from trainrun.diagnosis.overfitting import overfitting
from trainrun.diagnosis.penalty import penalty_dominates
from trainrun.diagnosis.schema import ClassPriors, Diagnosis, FigureRow, Finding
from trainrun.diagnosis.series import Run
from trainrun.diagnosis.val_beats_train import val_beats_train
from trainrun.spec import JobSpec

# Findings are returned in this order: the run's health first, explanations of curves last.
CODES = (
    "diverged",
    "degenerate_predictions",
    "not_learning",
    "penalty_dominates",
    "overfitting",
    "val_beats_train",
)
CHECKS: tuple[Callable[[Run], Finding | None], ...] = (
    diverged,
    degenerate,
    not_learning,
    penalty_dominates,
    overfitting,
    val_beats_train,
)


def diagnose(
    spec: JobSpec,
    rows: Sequence[FigureRow],
    status: str,
    error: str | None,
    priors: ClassPriors | None = None,
) -> Diagnosis:
    """Every finding the stored figures support, in ``CODES`` order, and a short summary."""
    run = Run.of(spec, rows, status, error, priors)
    found = [f for check in CHECKS if (f := check(run)) is not None]
    found.sort(key=lambda f: CODES.index(f.code))
    epoch = run.epochs[-1] if run.epochs else 0
    return Diagnosis(status, run.task, epoch, tuple(found), _summary(run, found))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _summary(run: Run, found: Sequence[Finding]) -> str:
    if not run.epochs:
        return f"No figures yet (job {run.status}); nothing to diagnose."
    where = f"{_count(len(run.epochs), 'epoch')} ({run.status})"
    if not found:
        return f"No problems found in {where}."
    return f"{_count(len(found), 'finding')} in {where}: " + "; ".join(f.title for f in found)
