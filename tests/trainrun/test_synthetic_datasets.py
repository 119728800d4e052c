"""The seeded synthetic sources: shapes, balance, reproducibility."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from trainrun.datasets import DATASETS, load_table


def higgs(**params: object) -> tuple[np.ndarray, np.ndarray]:
    table = load_table("higgs_synthetic", DATASETS["higgs_synthetic"].params(**params))
    assert table.task == "classification" and table.n_classes == 2
    return table.x, table.y


def test_higgs_synthetic_is_a_balanced_28_feature_binary_table() -> None:
    x, y = higgs(rows=2000)
    assert x.shape == (2000, 28) and x.dtype == np.float32
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert abs(y.mean() - 0.5) < 0.01
    assert np.isfinite(x).all()


def test_higgs_synthetic_is_seeded() -> None:
    a, b, c = higgs(rows=500, seed=3), higgs(rows=500, seed=3), higgs(rows=500, seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_higgs_synthetic_is_learnable_but_not_linearly_separable() -> None:
    x, y = higgs(rows=4000, noise=0.0)
    fit = LogisticRegression(max_iter=2000).fit(x[:3000], y[:3000])
    assert 0.55 < fit.score(x[3000:], y[3000:]) < 0.9
    assert higgs(rows=100, features=12)[0].shape == (100, 12)
