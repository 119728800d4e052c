"""The median stopping rule, pure: which running variants are worse than their peers' median."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from trainrun.sweeps.spec import MedianStopping


@dataclass(frozen=True)
class Contender:
    """One run of a sweep: its variant, whether it may be stopped, its metric per epoch."""

    key: int
    variant: int
    running: bool
    values: dict[int, float]  # epoch -> the monitored metric (NaN/inf: diverged)


@dataclass(frozen=True)
class StopDecision:
    key: int
    epoch: int
    value: float
    median: float
    peers: int

    def reason(self, metric: str) -> str:
        return (
            f"stopped by median rule at epoch {self.epoch}: {metric} {self.value:.4g} "
            f"worse than median {self.median:.4g} of {self.peers} peer run(s)"
        )


def _score(value: float, maximize: bool) -> float:
    """Higher is better; a non-finite figure is the worst there is."""
    if not math.isfinite(value):
        return -math.inf
    return value if maximize else -value


def median_decisions(contenders: Sequence[Contender], rule: MedianStopping) -> list[StopDecision]:
    """Each running contender judged at its latest epoch (>= ``min_epochs``) that at least
    ``min_peers`` runs of other variants have reached: stopped if strictly worse than their median.
    """
    decisions: list[StopDecision] = []
    for c in contenders:
        if not c.running:
            continue
        for epoch in sorted((e for e in c.values if e >= rule.min_epochs), reverse=True):
            peers = [
                p.values[epoch] for p in contenders if p.variant != c.variant and epoch in p.values
            ]
            if len(peers) < rule.min_peers:
                continue
            scores = [_score(v, rule.maximize) for v in peers]
            median_score = statistics.median(scores)
            if _score(c.values[epoch], rule.maximize) < median_score:
                median = median_score if rule.maximize else -median_score
                decisions.append(StopDecision(c.key, epoch, c.values[epoch], median, len(peers)))
            break  # judged at the latest comparable epoch only
    return decisions
