"""Datasets: named sources that produce arrays, and the seeded split into train/val/test."""

from trainrun.datasets.base import DATASETS, SplitArrays, Table, load_table, split_table

__all__ = ["DATASETS", "SplitArrays", "Table", "load_table", "split_table"]

from trainrun.datasets import builtin as _builtin  # noqa: F401  (registers the built-in sources)
from trainrun.datasets import files as _files  # noqa: F401  (registers the `table` source)
from trainrun.datasets import synthetic as _synthetic  # noqa: F401  (registers generated sources)
