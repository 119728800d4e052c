"""Curve blocks stay exact copies of the figure rows through every kind of write, on both
backends: sealing, a resumed attempt re-writing sealed epochs, the late test row, regression
statistics, and jobs stored before blocks existed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tests.trainrun.test_queries import LEASE, claim, expire_lease, new_job
from trainrun.db import curve_blocks, curve_queries, queries
from trainrun.db.curve_blocks import ARRAY_COLUMNS, PHASE_CODES, Arrays
from trainrun.db.engine import transaction
from trainrun.db.tables import CurveBlock

Factory = sessionmaker[Session]
EVERY_EPOCH = ("train", "train_eval", "val")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curve_blocks, "BLOCK_EPOCHS", 4)


def classification(loss: float) -> dict[str, Any]:
    return {"n": 10, "loss_sum": loss, "penalty": 0.5, "correct": 5.0, "ties": 1, "seconds": 0.1}


def regression(loss: float) -> dict[str, Any]:
    return {
        "n": 10, "loss_sum": loss, "sse": loss, "sae": 2 * loss, "target_sum": 3.0,
        "target_sq_sum": 9.5, "target_count": 10, "seconds": 0.1,
    }  # fmt: skip


def write(
    factory: Factory, job_id: str, token: int, epoch: int, phases: tuple[str, ...], loss: float,
    figures: Any = classification,
) -> None:  # fmt: skip
    with transaction(factory) as session:
        stats = {p: figures(loss) for p in phases}
        queries.record_epoch(session, job_id, token, epoch, stats, LEASE)


def running_job(
    factory: Factory, epochs: int, phases: tuple[str, ...] = EVERY_EPOCH, figures: Any = None
) -> tuple[str, int]:
    """A claimed job with ``epochs`` epochs written; loss 1/epoch. Returns (job id, token)."""
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    for epoch in range(1, epochs + 1):
        write(factory, job_id, token, epoch, phases, 1.0 / epoch, figures or classification)
    return job_id, token


def from_rows(factory: Factory, job_id: str, since_epoch: int = 0) -> Arrays:
    """The reference: the rows themselves, read one by one, ordered by epoch then phase."""
    with factory() as session:
        cols = curve_queries.figure_columns(session, job_id, since_epoch, names=ARRAY_COLUMNS)
    out = {c: np.asarray(cols[c], dtype=np.float64) for c in ARRAY_COLUMNS if c != "phase"}
    out["phase"] = np.asarray([PHASE_CODES[p] for p in cols["phase"]], dtype=np.float64)
    order = np.lexsort((out["phase"], out["epoch"]))
    return {c: v[order] for c, v in out.items()}


def assert_exact(factory: Factory, job_id: str, since_epoch: int = 0) -> Arrays:
    with factory() as session:
        got = curve_blocks.figure_arrays(session, job_id, since_epoch)
    want = from_rows(factory, job_id, since_epoch)
    assert set(got) == set(want)
    for c in want:
        np.testing.assert_array_equal(got[c].astype(np.float64), want[c], err_msg=c)
    return got


def spans(factory: Factory, job_id: str) -> list[tuple[int, int, int]]:
    with factory() as session:
        rows = session.execute(
            select(CurveBlock.first_epoch, CurveBlock.last_epoch, CurveBlock.rows)
            .where(CurveBlock.job_id == job_id)
            .order_by(CurveBlock.first_epoch)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_blocks_are_sealed_as_epochs_complete_and_reads_match_the_rows(factory: Factory) -> None:
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    for epoch in range(1, 11):
        write(factory, job_id, token, epoch, EVERY_EPOCH, 1.0 / epoch)
        assert_exact(factory, job_id)
    # Epochs 1-4 and 5-8 sealed (3 rows each epoch); 9-10 are read from the rows.
    assert spans(factory, job_id) == [(1, 4, 12), (5, 8, 12)]
    for since in (0, 3, 4, 7, 9, 10):
        got = assert_exact(factory, job_id, since)
        assert list(np.unique(got["epoch"])) == list(range(since + 1, 11))


def test_a_resumed_attempt_rewriting_sealed_epochs_rebuilds_their_block(factory: Factory) -> None:
    job_id, _ = running_job(factory, 8)
    expire_lease(factory, job_id)
    token2 = claim(factory, job_id)
    assert token2 is not None
    write(factory, job_id, token2, 6, EVERY_EPOCH, 0.25)  # resumed from a checkpoint at 5
    got = assert_exact(factory, job_id)
    assert got["loss_sum"][got["epoch"] == 6].tolist() == [0.25] * 3
    assert spans(factory, job_id) == [(1, 4, 12), (5, 8, 12)]


def test_the_test_row_at_the_best_epoch_lands_in_its_block(factory: Factory) -> None:
    job_id, token = running_job(factory, 8)
    write(factory, job_id, token, 3, ("test",), 0.125)
    got = assert_exact(factory, job_id)
    assert got["phase"][got["epoch"] == 3].tolist() == [0, 1, 2, 3]  # train .. test
    assert spans(factory, job_id) == [(1, 4, 13), (5, 8, 12)]


def test_regression_statistics_survive_packing(factory: Factory) -> None:
    job_id, _ = running_job(factory, 5, ("train", "val"), regression)
    got = assert_exact(factory, job_id)
    assert np.isnan(got["correct"]).all() and not np.isnan(got["sse"]).any()


def test_jobs_stored_before_blocks_existed_read_from_their_rows(factory: Factory) -> None:
    job_id, _ = running_job(factory, 9)
    with transaction(factory) as session:  # as after migration 0006 on an older database
        session.execute(
            delete(CurveBlock).where(CurveBlock.job_id == job_id, CurveBlock.first_epoch == 1)
        )
    assert spans(factory, job_id) == [(5, 8, 12)]
    assert_exact(factory, job_id)  # epochs 1-4 and 9 from the rows, 5-8 from the block
    assert_exact(factory, job_id, since_epoch=2)


def test_a_block_holds_only_the_columns_and_dtypes_it_names(factory: Factory) -> None:
    running_job(factory, 4)
    with factory() as session:
        block = session.execute(select(CurveBlock)).scalars().one()
        layout, rows, data = block.layout, block.rows, block.data
    # Classification: the regression statistics are all null and not stored.
    assert layout == "epoch:<i4,phase:i1,n:<f8,loss_sum:<f8,penalty:<f8,correct:<f8,ties:<f8"
    assert len(data) == rows * (4 + 1 + 5 * 8)
    assert curve_blocks.unpack(layout, rows, data)["epoch"].tolist() == [
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        3,
        4,
        4,
        4,
    ]
    for bad in ("epoch:|O", "epoch:<i4,secret:<f8", "phase:<f8"):
        with pytest.raises(ValueError, match="unknown curve block column"):
            curve_blocks.unpack(bad, rows, data)
    with pytest.raises(ValueError, match="does not hold"):
        curve_blocks.unpack(layout, rows + 1, data)
