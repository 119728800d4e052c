"""The dataset catalogue, the in-memory table a source yields, and the seeded split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trainrun.catalog import Catalog

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Table:
    """Features ``x`` (N, *sample_shape) float32; targets ``y``: class indices or (N, T) floats."""

    x: np.ndarray
    y: np.ndarray
    task: Task
    n_classes: int = 0  # classification only

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def target_dim(self) -> int:
        return self.n_classes if self.task == "classification" else int(self.y.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class SplitArrays:
    train: Table
    val: Table
    test: Table | None


SourceLoader = Callable[[Any], Table]
DATASETS: Catalog[SourceLoader] = Catalog("dataset")


def load_table(source: str, params: Any) -> Table:
    return DATASETS[source].build(params)


def _subset(t: Table, idx: np.ndarray) -> Table:
    """The rows at ``idx`` as fresh arrays that own their memory (``np.take`` always gives
    one; fancy indexing may return a view of a temporary), so ``standardize`` may scale them
    in place."""
    return Table(np.take(t.x, idx, axis=0), np.take(t.y, idx, axis=0), t.task, t.n_classes)


def _draw(
    groups: list[np.ndarray], k: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exactly ``k`` rows drawn at random, split over ``groups`` (the classes, when stratified)
    in proportion to their sizes, the rounding settled by largest remainder; per group, the
    drawn rows and the rest."""
    sizes = np.array([len(g) for g in groups])
    quotas = sizes * (k / max(1, sizes.sum()))
    counts = np.floor(quotas).astype(np.int64)
    short = k - int(counts.sum())
    if short > 0:
        by_remainder = np.argsort(-(quotas - counts), kind="stable")
        counts[by_remainder[:short]] += 1
    drawn, rest = [], []
    for group, count in zip(groups, counts, strict=True):
        shuffled = rng.permutation(group)
        drawn.append(shuffled[:count])
        rest.append(shuffled[count:])
    return drawn, rest


def split_table(
    table: Table, train: float, val: float, test: float, seed: int, stratify: bool
) -> SplitArrays:
    """Seeded split; stratified on the class for classification when asked (each class keeps
    its share in every part, to the row). Each part's size is its fraction of the rows."""
    n = len(table)
    total = train + val + test
    sizes = {"train": round(n * train / total), "test": round(n * test / total) if test else 0}
    sizes["val"] = n - sizes["train"] - sizes["test"]
    for part, rows in sizes.items():
        if rows <= 0 and (part != "test" or test > 0):
            raise ValueError(f"the split leaves '{part}' with no rows ({n} rows in all)")
    rng = np.random.default_rng(seed)
    if stratify and table.task == "classification":
        groups = [np.flatnonzero(table.y == c) for c in np.unique(table.y)]
    else:
        groups = [np.arange(n)]
    train_parts, rest = _draw(groups, sizes["train"], rng)
    val_parts, test_parts = _draw(rest, sizes["val"], rng)
    return SplitArrays(
        train=_subset(table, np.sort(np.concatenate(train_parts))),
        val=_subset(table, np.sort(np.concatenate(val_parts))),
        test=_subset(table, np.sort(np.concatenate(test_parts))) if test else None,
    )


def _column_moments(x: np.ndarray, rows: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std, (1, *sample_shape) float32, in float64 over row chunks: no
    full-size temporary (``np.std`` makes one), and shifted sums keep the variance exact."""
    n = len(x)
    shift = x[: min(n, 4096)].mean(axis=0, dtype=np.float64)
    total = np.zeros_like(shift)
    squares = np.zeros_like(shift)
    for start in range(0, n, rows):
        d = x[start : start + rows].astype(np.float64) - shift
        total += d.sum(axis=0)
        squares += (d * d).sum(axis=0)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return (shift + mean)[None].astype(np.float32), np.sqrt(var)[None].astype(np.float32)


def standardize(split: SplitArrays) -> SplitArrays:
    """Scale features with mean and std fitted on the training split only.

    Arrays that ``split_table`` made (fresh, owned, writeable copies) are scaled in place, so
    a large table is held once, not once per temporary; anything else is copied first.
    """
    mean, std = _column_moments(split.train.x)
    std[std == 0] = 1.0

    def apply(t: Table | None) -> Table | None:
        if t is None:
            return None
        own = t.x.flags.owndata and t.x.flags.writeable and t.x.dtype == np.float32
        x = t.x if own else np.array(t.x, dtype=np.float32)
        x -= mean
        x /= std
        return Table(x, t.y, t.task, t.n_classes)

    train, val = apply(split.train), apply(split.val)
    assert train is not None and val is not None
    return SplitArrays(train, val, apply(split.test))
