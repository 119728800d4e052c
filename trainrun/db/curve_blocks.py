"""Packed read copies of a job's figure rows, one block per range of ``BLOCK_EPOCHS`` epochs.

Reading a 10,000-epoch job row by row (30,000 rows) costs more than the 50 ms a curves
response may take; twenty blocks of packed columns cost a few milliseconds. The rows stay the
truth. The invariant, kept in the transaction of every figure write (``record_epoch`` calls
``after_write``): **a block holds exactly the rows of its job whose epoch lies in
[first_epoch, last_epoch]**. So
 - a block is sealed when its last epoch is first written;
 - a write to an epoch inside a block (a resumed attempt re-writing epochs, the test row at
   the best epoch) rebuilds that block from the rows in the same transaction;
 - a reader takes the blocks, then the rows of every epoch no block covers (the tail of a
   running job, jobs stored before blocks existed).

A block's data is its columns packed one after the other (epoch as int32, phase as its index in
``PHASE_ORDER``, then the statistics that are not all null as float64), described by its
``layout``; a read is one ``np.frombuffer`` per column, and only these dtypes are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from trainrun.db.tables import CurveBlock, EpochFigures
from trainrun.figures import PHASE_ORDER, STAT_COLUMNS

BLOCK_EPOCHS = 500  # changing it needs a migration that deletes the blocks (``after_write``)
ARRAY_COLUMNS = ("epoch", "phase", *STAT_COLUMNS)
PHASE_CODES = {p: i for i, p in enumerate(PHASE_ORDER)}

Arrays = dict[str, np.ndarray]  # epoch: int64, phase: int8 (index in PHASE_ORDER), stats: f8


def rows_to_arrays(rows: Sequence[Any]) -> Arrays:
    """Rows of ``ARRAY_COLUMNS`` (NULL statistics -> NaN) as one array per column."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in ARRAY_COLUMNS]
    out: Arrays = {
        "epoch": np.asarray(columns[0], dtype=np.int64),
        "phase": np.fromiter((PHASE_CODES[p] for p in columns[1]), np.int8, len(columns[1])),
    }
    for name, values in zip(STAT_COLUMNS, columns[2:], strict=True):
        out[name] = np.asarray(values, dtype=np.float64)
    return out


def empty_arrays() -> Arrays:
    return rows_to_arrays([])


DTYPES = {"epoch": "<i4", "phase": "i1"}  # statistics: "<f8"
READ_AS = {"epoch": np.int64, "phase": np.int8}  # statistics: float64


def pack(arrays: Arrays) -> tuple[str, bytes]:
    """(layout, data) of one block."""
    names = ["epoch", "phase", *(c for c in STAT_COLUMNS if not np.isnan(arrays[c]).all())]
    layout = ",".join(f"{c}:{DTYPES.get(c, '<f8')}" for c in names)
    return layout, b"".join(arrays[c].astype(DTYPES.get(c, "<f8")).tobytes() for c in names)


@lru_cache(maxsize=64)
def parse_layout(layout: str) -> tuple[tuple[str, np.dtype[Any]], ...]:
    """The columns of a layout; anything but the columns and dtypes ``pack`` writes is refused."""
    out = []
    for item in layout.split(","):
        name, _, code = item.partition(":")
        if name not in ARRAY_COLUMNS or code != DTYPES.get(name, "<f8"):
            raise ValueError(f"unknown curve block column {item!r}")
        out.append((name, np.dtype(code)))
    return tuple(out)


def unpack(layout: str, rows: int, data: bytes) -> Arrays:
    columns = parse_layout(layout)
    if len(data) != rows * sum(dtype.itemsize for _, dtype in columns):
        raise ValueError(f"curve block of {len(data)} bytes does not hold {rows} rows of {layout}")
    out: Arrays = {}
    offset = 0
    for name, dtype in columns:
        values = np.frombuffer(data, dtype, rows, offset)
        out[name] = values.astype(READ_AS.get(name, np.float64))
        offset += rows * dtype.itemsize
    for name in STAT_COLUMNS:
        if name not in out:
            out[name] = np.full(rows, np.nan)
    return out


def concat(parts: Sequence[Arrays]) -> Arrays:
    if not parts:
        return empty_arrays()
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in ARRAY_COLUMNS}


def _in_order(arrays: Arrays) -> Arrays:
    """Ordered by epoch, then phase in ``PHASE_ORDER`` (not the alphabetical order SQL gives)."""
    key = arrays["epoch"] * len(PHASE_ORDER) + arrays["phase"]
    if len(key) < 2 or (np.diff(key) > 0).all():
        return arrays
    order = np.argsort(key, kind="stable")
    return {c: v[order] for c, v in arrays.items()}


def _rows(session: Session, *where: Any) -> Arrays:
    q = select(*(getattr(EpochFigures, c) for c in ARRAY_COLUMNS)).where(*where)
    return _in_order(rows_to_arrays(session.execute(q).all()))


def _seal(session: Session, job_id: str, first: int, last: int) -> None:
    arrays = _rows(
        session,
        EpochFigures.job_id == job_id,
        EpochFigures.epoch >= first,
        EpochFigures.epoch <= last,
    )
    if len(arrays["epoch"]):
        layout, data = pack(arrays)
        rows = len(arrays["epoch"])
        block = CurveBlock(job_id=job_id, first_epoch=first, last_epoch=last, rows=rows,
                           layout=layout, data=data)  # fmt: skip
        session.add(block)
        session.flush()


def after_write(session: Session, job_id: str, epoch: int, epoch_reached: int) -> None:
    """Keep the invariant once rows of ``epoch`` were upserted (same transaction, after them).

    ``epoch_reached``: the job's, after this write. Blocks end at multiples of BLOCK_EPOCHS
    no later than it, so most epochs of a run need no statement here at all.
    """
    block_end = -(-epoch // BLOCK_EPOCHS) * BLOCK_EPOCHS
    if block_end > epoch_reached:
        return  # the block that would hold this epoch is not sealed yet
    stale = session.execute(
        delete(CurveBlock)
        .where(
            CurveBlock.job_id == job_id,
            CurveBlock.first_epoch <= epoch,
            CurveBlock.last_epoch >= epoch,
        )
        .returning(CurveBlock.first_epoch, CurveBlock.last_epoch)
    ).first()
    if stale is not None:
        _seal(session, job_id, stale[0], stale[1])
    elif epoch == block_end:
        _seal(session, job_id, block_end - BLOCK_EPOCHS + 1, block_end)


def _uncovered(spans: Sequence[tuple[int, int]], since_epoch: int) -> list[tuple[int, int | None]]:
    """Epoch ranges after ``since_epoch`` that no span covers (spans sorted, disjoint)."""
    gaps: list[tuple[int, int | None]] = []
    start = since_epoch + 1
    for first, last in spans:
        if first > start:
            gaps.append((start, first - 1))
        start = max(start, last + 1)
    gaps.append((start, None))
    return gaps


Block = tuple[int, int, int, str, bytes]  # first_epoch, last_epoch, rows, layout, data
BLOCKS_SQL = (
    "SELECT first_epoch, last_epoch, rows, layout, data FROM curve_blocks"
    " WHERE job_id = %s AND last_epoch > %s ORDER BY first_epoch"
)


def _blocks(session: Session, job_id: str, since_epoch: int) -> Sequence[Block]:
    connection = session.connection()
    if connection.dialect.driver == "psycopg":
        # psycopg's binary protocol, on the session's connection and transaction: bytea then
        # arrives as bytes rather than as hex text of twice the size (3x faster for 1.4 MB).
        driver = connection.connection.driver_connection
        with driver.cursor(binary=True) as cursor:  # type: ignore[union-attr]
            cursor.execute(BLOCKS_SQL, (job_id, since_epoch))
            return cursor.fetchall()
    columns = (CurveBlock.first_epoch, CurveBlock.last_epoch, CurveBlock.rows, CurveBlock.layout)
    q = select(*columns, CurveBlock.data).where(
        CurveBlock.job_id == job_id, CurveBlock.last_epoch > since_epoch
    )
    return [tuple(r) for r in session.execute(q.order_by(CurveBlock.first_epoch))]  # type: ignore[misc]


def figure_arrays(
    session: Session, job_id: str, since_epoch: int = 0, through_epoch: int | None = None
) -> Arrays:
    """The job's rows with ``epoch > since_epoch`` as arrays, ordered by epoch then phase.

    ``through_epoch``: the job's ``epoch_reached`` when known; the rows are not queried when
    blocks cover every epoch up to it (rows past it, stored since, come with the next read).
    """
    blocks = _blocks(session, job_id, since_epoch)
    parts = [unpack(layout, rows, data) for _, _, rows, layout, data in blocks]
    gaps = _uncovered([(b[0], b[1]) for b in blocks], since_epoch)
    if through_epoch is not None and gaps[-1][0] > through_epoch:
        gaps.pop()
    if gaps:
        ranges = [
            EpochFigures.epoch.between(lo, hi) if hi is not None else EpochFigures.epoch >= lo
            for lo, hi in gaps
        ]
        parts.append(_rows(session, EpochFigures.job_id == job_id, or_(*ranges)))
    arrays = concat(parts)
    if since_epoch and len(arrays["epoch"]) and arrays["epoch"][0] <= since_epoch:
        keep = arrays["epoch"] > since_epoch
        arrays = {c: v[keep] for c, v in arrays.items()}
    return _in_order(arrays)  # already, unless rows of gaps between blocks came last
