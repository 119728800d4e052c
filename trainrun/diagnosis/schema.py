"""What goes into a diagnosis (figure rows, class priors) and what comes out (findings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Severity = Literal["info", "warning", "error"]


class FigureRow(Protocol):
    """What a figure row must offer: ``EpochFigures``' attributes."""

    @property
    def epoch(self) -> int: ...
    @property
    def phase(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def loss_sum(self) -> float: ...
    @property
    def penalty(self) -> float: ...
    @property
    def correct(self) -> float | None: ...
    @property
    def ties(self) -> int | None: ...
    @property
    def sse(self) -> float | None: ...
    @property
    def sae(self) -> float | None: ...
    @property
    def target_sum(self) -> float | None: ...
    @property
    def target_sq_sum(self) -> float | None: ...
    @property
    def target_count(self) -> int | None: ...


@dataclass(frozen=True)
class ClassPriors:
    """Class frequencies of the train and val splits (classification only)."""

    train: tuple[float, ...]
    val: tuple[float, ...]

    @classmethod
    def from_counts(cls, train: Sequence[int], val: Sequence[int]) -> ClassPriors:
        return cls(_normalise(train), _normalise(val))


def _normalise(counts: Sequence[int | float]) -> tuple[float, ...]:
    total = float(sum(counts))
    return tuple(c / total for c in counts) if total > 0 else ()


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    title: str  # one line, used in the summary
    message: str  # one paragraph for a person
    epochs: tuple[int, ...]  # the epochs the evidence comes from
    figures: dict[str, Any]  # finite numbers, strings and lists of them (JSON-safe)


@dataclass(frozen=True)
class Diagnosis:
    status: str
    task: str | None
    epoch: int  # the last epoch with figures (0: none yet)
    findings: tuple[Finding, ...]
    summary: str
