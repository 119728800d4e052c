"""The seeded train/val/test split: exact sizes, classes kept in proportion, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from trainrun.datasets import Table, split_table
from trainrun.errors import SpecError
from trainrun.planning import prepare_data
from trainrun.spec import JobSpec


def table(labels: list[int]) -> Table:
    y = np.asarray(labels, dtype=np.int64)
    x = np.arange(len(y), dtype=np.float32)[:, None]  # row i holds i: rows are traceable
    return Table(x, y, "classification", int(y.max()) + 1)


def rows(part: Table) -> list[int]:
    return part.x[:, 0].astype(int).tolist()


def test_parts_are_disjoint_cover_the_table_and_have_their_share_of_rows() -> None:
    t = table([0] * 700 + [1] * 200 + [2] * 100)
    split = split_table(t, 0.6, 0.2, 0.2, seed=3, stratify=True)
    assert split.test is not None
    parts = [rows(split.train), rows(split.val), rows(split.test)]
    assert [len(p) for p in parts] == [600, 200, 200]
    assert sorted(r for part in parts for r in part) == list(range(1000))
    for part, rows_in_part in zip((split.train, split.val, split.test), parts, strict=True):
        assert rows_in_part == sorted(rows_in_part)  # in the table's order
        # Stratified: every class keeps its 70/20/10 share in every part, to the row.
        share = np.bincount(part.y, minlength=3) / len(part.y)
        assert np.allclose(share, [0.7, 0.2, 0.1])


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    t = table([0, 1] * 50)
    first = split_table(t, 0.5, 0.5, 0.0, seed=1, stratify=True)
    again = split_table(t, 0.5, 0.5, 0.0, seed=1, stratify=True)
    other = split_table(t, 0.5, 0.5, 0.0, seed=2, stratify=True)
    assert first.test is None
    assert rows(first.train) == rows(again.train)
    assert rows(first.train) != rows(other.train)


def test_rounding_is_settled_by_largest_remainder_across_classes() -> None:
    t = table([0] * 5 + [1] * 5 + [2] * 3)  # 13 rows, 0.5 of them: 6.5 -> 6 (round half even)
    split = split_table(t, 0.5, 0.5, 0.0, seed=0, stratify=True)
    assert len(split.train.y) == 6 and len(split.val.y) == 7
    counts = np.bincount(split.train.y, minlength=3).tolist()
    assert sum(counts) == 6 and all(c in (1, 2, 3) for c in counts)


def test_unstratified_regression_split() -> None:
    t = Table(np.zeros((10, 2), np.float32), np.linspace(0, 1, 10)[:, None], "regression", 0)
    split = split_table(t, 0.8, 0.2, 0.0, seed=0, stratify=True)  # no classes to keep
    assert (len(split.train.y), len(split.val.y)) == (8, 2)


def test_a_part_left_with_no_rows_is_a_spec_error_at_the_split() -> None:
    with pytest.raises(ValueError, match="'val' with no rows"):
        split_table(table([0, 1, 0]), 0.9, 0.1, 0.0, seed=0, stratify=False)
    spec = JobSpec.model_validate(
        {
            "name": "tiny",
            "data": {"source": "iris", "split": {"train": 0.999, "val": 0.001}},
            "model": {"kind": "mlp", "hidden": [4]},
            "loss": {"kind": "cross_entropy"},
        }
    )
    with pytest.raises(SpecError) as caught:
        prepare_data(spec)
    assert caught.value.loc == ("data", "split")
