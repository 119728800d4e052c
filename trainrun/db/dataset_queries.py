"""Reads and writes of uploaded-dataset rows. Callers own the transaction; these only flush."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainrun.db.tables import Dataset
from trainrun.errors import NotFound


def create_dataset(
    session: Session,
    *,
    dataset_id: str,
    owner: str,
    name: str,
    format: str,
    path: str,
    size: int,
    sha256: str,
    rows: int,
    columns: list[str],
) -> Dataset:
    dataset = Dataset(
        id=dataset_id,
        owner=owner,
        name=name,
        format=format,
        path=path,
        bytes=size,
        sha256=sha256,
        rows=rows,
        columns=columns,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, dataset_id: str, owner: str | None = None) -> Dataset:
    """The dataset, or ``NotFound``; with ``owner`` set, another owner's dataset is not found."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or (owner is not None and dataset.owner != owner):
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def list_datasets(session: Session, *, owner: str | None, limit: int) -> Sequence[Dataset]:
    """Newest first."""
    q = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)
    if owner is not None:
        q = q.where(Dataset.owner == owner)
    return session.scalars(q).all()


def delete_dataset(session: Session, dataset: Dataset) -> None:
    session.delete(dataset)
    session.flush()
