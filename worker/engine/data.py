"""Splits held on the device and batched by index (no per-sample __getitem__), or, when a
split is too large for device memory, streamed to it in chunks gathered into pinned host memory.

Both kinds yield the same batches for the same order, so figures do not depend on the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from trainrun.datasets import SplitArrays, Table

# The resident splits may take at most this fraction of the device's free memory; the rest is
# left to the model, its gradients, optimizer state and activations.
RESIDENT_FRACTION = 0.5
CHUNK_BYTES = 256 << 20  # rows gathered per host->device copy when streaming

Batch = tuple[Tensor, Tensor]


class BatchSource(Protocol):
    @property
    def device(self) -> torch.device: ...

    def __len__(self) -> int: ...

    def take(self, idx: Tensor) -> BatchSource: ...

    def batches(self, batch_size: int, order: Tensor | None) -> Iterator[Batch]: ...


def _host_tensors(table: Table) -> tuple[Tensor, Tensor]:
    """Zero-copy views of the table's arrays (a copy only when they are not contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(table.x)), torch.from_numpy(
        np.ascontiguousarray(table.y)
    )


@dataclass(frozen=True)
class DeviceTable:
    x: Tensor  # (N, *sample_shape) float32
    y: Tensor  # (N,) int64 class indices, or (N, T) float32

    @classmethod
    def from_table(cls, table: Table, device: torch.device) -> DeviceTable:
        x, y = _host_tensors(table)
        return cls(x.to(device), y.to(device))

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: Tensor) -> DeviceTable:
        return DeviceTable(self.x[idx], self.y[idx])

    def batches(self, batch_size: int, order: Tensor | None) -> Iterator[Batch]:
        for idx in batch_indices(len(self), batch_size, order):
            yield self.x[idx], self.y[idx]


@dataclass(frozen=True)
class StreamedTable:
    """A split left in host memory; batches reach ``device`` a chunk of rows at a time.

    Each chunk is gathered (in the epoch's order) into one of two pinned staging buffers and
    copied asynchronously, so the gather of chunk k+1 overlaps the GPU's work on chunk k.
    """

    x: Tensor  # host, (N, *sample_shape)
    y: Tensor  # host
    device: torch.device
    chunk_rows: int

    @classmethod
    def from_table(
        cls, table: Table, device: torch.device, chunk_rows: int | None = None
    ) -> StreamedTable:
        x, y = _host_tensors(table)
        if chunk_rows is None:
            row_bytes = x[:1].nbytes + y[:1].nbytes
            chunk_rows = max(1, CHUNK_BYTES // max(1, row_bytes))
        return cls(x, y, device, chunk_rows)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, idx: Tensor) -> StreamedTable:
        idx = idx.cpu()
        return StreamedTable(self.x[idx], self.y[idx], self.device, self.chunk_rows)

    def batches(self, batch_size: int, order: Tensor | None) -> Iterator[Batch]:
        n = len(self)
        rows = max(1, self.chunk_rows // batch_size) * batch_size  # whole batches per chunk
        host_order = order.cpu() if order is not None else None  # one sync per epoch
        pinned = self.device.type == "cuda"
        staging: list[tuple[Tensor, Tensor]] = []
        copied: list[torch.cuda.Event | None] = [None, None]
        for k, start in enumerate(range(0, n, rows)):
            stop = min(start + rows, n)
            if not pinned:  # CPU "device": a fresh gather per chunk, no staging needed
                if host_order is None:
                    xs, ys = self.x[start:stop], self.y[start:stop]
                else:
                    idx = host_order[start:stop]
                    xs, ys = self.x[idx], self.y[idx]
            else:
                slot = k % 2
                if len(staging) <= slot:
                    shape_x, shape_y = (rows, *self.x.shape[1:]), (rows, *self.y.shape[1:])
                    staging.append(
                        (
                            torch.empty(shape_x, dtype=self.x.dtype, pin_memory=True),
                            torch.empty(shape_y, dtype=self.y.dtype, pin_memory=True),
                        )
                    )
                event = copied[slot]
                if event is not None:
                    event.synchronize()  # the copy out of this buffer two chunks ago is done
                bx, by = staging[slot][0][: stop - start], staging[slot][1][: stop - start]
                if host_order is None:
                    bx.copy_(self.x[start:stop])
                    by.copy_(self.y[start:stop])
                else:
                    idx = host_order[start:stop]
                    torch.index_select(self.x, 0, idx, out=bx)
                    torch.index_select(self.y, 0, idx, out=by)
                xs = bx.to(self.device, non_blocking=True)
                ys = by.to(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                copied[slot] = done
            for b in range(0, stop - start, batch_size):
                yield xs[b : b + batch_size], ys[b : b + batch_size]


@dataclass(frozen=True)
class DeviceSplit:
    train: BatchSource
    val: BatchSource
    test: BatchSource | None

    @classmethod
    def from_arrays(
        cls, split: SplitArrays, device: torch.device, stream_chunk_rows: int | None = None
    ) -> DeviceSplit:
        """Resident splits where they fit, streamed ones where not.

        ``stream_chunk_rows`` forces every split onto the streamed path with that chunk size
        (tests and benchmarks; the path is otherwise taken only on CUDA).
        """
        tables = {"train": split.train, "val": split.val}
        if split.test is not None:
            tables["test"] = split.test
        if stream_chunk_rows is not None:
            streamed = set(tables)
        else:
            sizes = {name: t.x.nbytes + t.y.nbytes for name, t in tables.items()}
            streamed = streamed_splits(sizes, free_device_bytes(device))
        built: dict[str, BatchSource] = {
            name: StreamedTable.from_table(t, device, stream_chunk_rows)
            if name in streamed
            else DeviceTable.from_table(t, device)
            for name, t in tables.items()
        }
        return cls(built["train"], built["val"], built.get("test"))


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device; None for the CPU (host memory already holds the data)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def streamed_splits(
    sizes: dict[str, int], free: int | None, fraction: float = RESIDENT_FRACTION
) -> set[str]:
    """Which splits to stream: none if all fit in ``fraction`` of free memory; else the
    training split, and the others as well if they alone do not fit either."""
    if free is None:
        return set()
    budget = fraction * free
    if sum(sizes.values()) <= budget:
        return set()
    rest = {k: v for k, v in sizes.items() if k != "train"}
    return {"train"} | (set(rest) if sum(rest.values()) > budget else set())


def batch_indices(n: int, batch_size: int, order: Tensor | None) -> Iterator[Tensor | slice]:
    """Index batches over ``order`` (a permutation on the device), or contiguous slices."""
    for start in range(0, n, batch_size):
        if order is None:
            yield slice(start, min(start + batch_size, n))
        else:
            yield order[start : start + batch_size]
