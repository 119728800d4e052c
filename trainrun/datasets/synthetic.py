"""Seeded synthetic sources: stand-ins for data that cannot be downloaded where trainrun runs."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import Field

from trainrun.catalog import Params
from trainrun.datasets.base import DATASETS, Table


class HiggsSyntheticParams(Params):
    rows: int = Field(default=20_000, ge=100, le=2_000_000, description="samples to generate")
    features: int = Field(default=28, ge=8, le=1024, description="float features per sample")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="generator seed")
    noise: float = Field(
        default=1.0, ge=0, le=100, description="logistic label noise; 0: separable"
    )


@DATASETS.register("higgs_synthetic", HiggsSyntheticParams, task="classification")
def higgs_synthetic(p: HiggsSyntheticParams) -> Table:
    """Seed 001's HIGGS stand-in: a nonlinear, noisy binary task on 28 float features."""
    return _higgs(p.rows, p.features, p.seed, p.noise)


@lru_cache(maxsize=8)
def _higgs(rows: int, features: int, seed: int, noise: float) -> Table:
    # Like HIGGS: "low-level" measurements plus "high-level" features derived from them
    # nonlinearly; the label depends on both through interactions no linear model sees.
    rng = np.random.default_rng(seed)
    n_high = features // 4
    n_low = features - n_high
    low = rng.standard_normal((rows, n_low))
    a = low[:, np.arange(n_high) % n_low]
    b = low[:, (np.arange(n_high) * 3 + 1) % n_low]
    kinds = [
        np.hypot(a, b),  # invariant-mass-like magnitudes
        a * b,
        np.abs(a - b),
        np.tanh(a + b),
    ]
    high = np.stack(
        [kinds[j % len(kinds)][:, j] for j in range(n_high)], axis=1
    ) + 0.1 * rng.standard_normal((rows, n_high))
    x = np.concatenate([low, high], axis=1)
    # The signal: a random sparse quadratic form of the low-level features and a random
    # weighting of the high-level ones, each scaled to unit variance.
    pairs = rng.integers(0, n_low, size=(2 * n_low, 2))
    weights = rng.standard_normal(2 * n_low)
    quad = (low[:, pairs[:, 0]] * low[:, pairs[:, 1]]) @ weights
    lin = (high - high.mean(0)) / high.std(0) @ rng.standard_normal(n_high)
    score = quad / quad.std() + lin / lin.std() + np.sin(2 * low[:, 0]) * low[:, 1]
    score = score + noise * rng.logistic(size=rows)
    y = (score > np.median(score)).astype(np.int64)  # balanced, like HIGGS (53% signal)
    return Table(x.astype(np.float32), y, "classification", 2)
