"""Honest downsampling of aligned curves: a min/max envelope per bucket, never an average.

Every point kept is a real (epoch, value) pair as stored. The epochs are cut into equal
buckets; in each bucket, for every series, the epoch holding its minimum and the epoch holding
its maximum are kept, as are the first and the last epoch. A spike therefore survives any
amount of downsampling, which a mean or a stride would hide. All series share one epoch axis,
so the kept epochs are the union over the series; the number of buckets is the largest whose
union fits in ``max_points`` (at least one bucket is always used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHOD = "minmax"


@dataclass(frozen=True)
class Sampling:
    method: str
    buckets: int
    epochs_total: int
    points: int


def envelope_indices(columns: Sequence[np.ndarray], length: int, buckets: int) -> np.ndarray:
    """Sorted row indices: first, last, and each column's argmin and argmax in every bucket."""
    size = -(-length // buckets)  # ceil: equal buckets, the last one may be shorter
    padded = size * (-(-length // size))
    keep = np.zeros(length, dtype=bool)
    keep[0] = keep[-1] = True
    starts = np.arange(0, padded, size)
    for values in columns:
        flat = np.full(padded, np.nan)
        flat[:length] = values
        grid = flat.reshape(-1, size)  # (buckets, size)
        missing = np.isnan(grid)
        has_value = ~missing.all(axis=1)
        lows = np.where(missing, np.inf, grid).argmin(axis=1)
        highs = np.where(missing, -np.inf, grid).argmax(axis=1)
        keep[(starts + lows)[has_value]] = True
        keep[(starts + highs)[has_value]] = True
    return np.flatnonzero(keep)


def minmax_downsample(
    columns: Sequence[np.ndarray], max_points: int
) -> tuple[np.ndarray, Sampling] | None:
    """Row indices to keep so that at most ``max_points`` rows remain, or None if all fit.

    ``columns`` are equal-length float arrays (NaN where not measured). With very many series
    and a tiny ``max_points`` even one bucket can exceed it; one bucket is then returned.
    """
    length = len(columns[0]) if columns else 0
    if length <= max_points:
        return None
    # The union grows with the number of buckets (not strictly), so search for the largest fit.
    low, high = 1, max(1, (max_points - 2) // 2)
    best = envelope_indices(columns, length, 1)
    best_buckets = 1
    while low <= high:
        mid = (low + high) // 2
        kept = envelope_indices(columns, length, mid)
        if len(kept) <= max_points:
            best, best_buckets, low = kept, mid, mid + 1
        else:
            high = mid - 1
    return best, Sampling(METHOD, best_buckets, length, len(best))
