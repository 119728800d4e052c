"""In-memory splits moved to the device once and batched by index (no per-sample __getitem__)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from trainrun.datasets import SplitArrays, Table


@dataclass(frozen=True)
class DeviceTable:
    x: Tensor  # (N, *sample_shape) float32
    y: Tensor  # (N,) int64 class indices, or (N, T) float32

    @classmethod
    def from_table(cls, table: Table, device: torch.device) -> DeviceTable:
        x = torch.from_numpy(np.ascontiguousarray(table.x)).to(device)
        y = torch.from_numpy(np.ascontiguousarray(table.y)).to(device)
        return cls(x, y)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: Tensor) -> DeviceTable:
        return DeviceTable(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class DeviceSplit:
    train: DeviceTable
    val: DeviceTable
    test: DeviceTable | None

    @classmethod
    def from_arrays(cls, split: SplitArrays, device: torch.device) -> DeviceSplit:
        test = DeviceTable.from_table(split.test, device) if split.test is not None else None
        return cls(
            DeviceTable.from_table(split.train, device),
            DeviceTable.from_table(split.val, device),
            test,
        )


def batch_indices(n: int, batch_size: int, order: Tensor | None) -> Iterator[Tensor | slice]:
    """Index batches over ``order`` (a permutation on the device), or contiguous slices."""
    for start in range(0, n, batch_size):
        if order is None:
            yield slice(start, min(start + batch_size, n))
        else:
            yield order[start : start + batch_size]
