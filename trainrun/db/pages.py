"""Keyset pagination, newest first: the cursor is the (created_at, id) of a page's last row."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, or_


class Dated(Protocol):
    id: Any
    created_at: Any


T = TypeVar("T", bound=Dated)


def encode_cursor(row: Dated) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, row_id = raw.split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


def newest_first(q: Select[Any], model: type[Dated], limit: int, cursor: str | None) -> Select[Any]:
    """Order by (created_at, id) descending, start after ``cursor``, fetch one extra row."""
    q = q.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    if cursor:
        created, row_id = decode_cursor(cursor)
        q = q.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < row_id))
        )
    return q


def page_of(rows: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """The page's rows and the cursor of the next page (None on the last)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]) if more and rows else None
