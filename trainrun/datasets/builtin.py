"""Built-in sources: seed 000's sine windows and the tables bundled with scikit-learn."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import Field
from sklearn import datasets as skds

from trainrun.catalog import NoParams, Params
from trainrun.datasets.base import DATASETS, Table


class SineParams(Params):
    window: int = Field(default=150, gt=1, le=4000, description="samples per input window")
    points: int = Field(default=5000, gt=10, le=1_000_000, description="points on the curve")
    cycles: float = Field(default=25.0, gt=0, description="sine periods over the curve")


@DATASETS.register("sine", SineParams, task="classification")
def sine(p: SineParams) -> Table:
    """Seed 000: does a sine wave rise next? Windows of (1, window); class 0 = rises."""
    return _sine(p.window, p.points, p.cycles)


@lru_cache(maxsize=8)
def _sine(window: int, points: int, cycles: float) -> Table:
    wave = np.sin(np.linspace(0, 2 * np.pi * cycles, points))
    n = points - window - 1
    if n < 2:
        raise ValueError(f"sine: {points} points leave no window of {window}")
    starts = np.arange(n)
    x = np.lib.stride_tricks.sliding_window_view(wave, window)[:n].astype(np.float32)
    # Seed 000 compares the point after the window's successor with that successor.
    rises = wave[starts + window + 1] > wave[starts + window]
    y = np.where(rises, 0, 1).astype(np.int64)
    return Table(x[:, None, :].copy(), y, "classification", 2)


def _sklearn(name: str, loader: str, task: str, doc: str) -> None:
    def build(_: NoParams) -> Table:
        return _load_sklearn(loader, task)

    build.__doc__ = doc
    DATASETS.register(name, NoParams, task=task)(build)


@lru_cache(maxsize=8)
def _load_sklearn(loader: str, task: str) -> Table:
    bunch = getattr(skds, loader)()
    x = np.asarray(bunch.data, dtype=np.float32)
    if task == "classification":
        labels = np.asarray(bunch.target, dtype=np.int64)
        return Table(x, labels, "classification", int(labels.max()) + 1)
    targets = np.asarray(bunch.target, dtype=np.float32).reshape(len(x), -1)
    return Table(x, targets, "regression")


_sklearn(
    "digits", "load_digits", "classification", "8x8 handwritten digits, 64 features, 10 classes"
)
_sklearn("iris", "load_iris", "classification", "150 irises, 4 features, 3 classes")
_sklearn("wine", "load_wine", "classification", "178 wines, 13 features, 3 classes")
_sklearn(
    "breast_cancer", "load_breast_cancer", "classification", "569 tumours, 30 features, 2 classes"
)
_sklearn("diabetes", "load_diabetes", "regression", "442 patients, 10 features, 1 target")
