"""Datasets: upload a data file, list, read, delete. Jobs name one as ``{source: table,
params: {dataset_id: ...}}``."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path, PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, PrincipalDep, SessionDep, SettingsDep
from api.responses import errors, validation_error
from api.upload import receive_file
from trainrun.datasets.files import describe_file, sniff_format, upload_path, uploads_dir
from trainrun.db import dataset_queries
from trainrun.db.tables import Dataset, new_id
from trainrun.errors import SpecError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


class DatasetPublic(BaseModel):
    id: str
    name: str
    owner: str
    format: str
    bytes: int
    sha256: str
    rows: int
    columns: list[str]
    created_at: datetime

    @classmethod
    def of(cls, d: Dataset) -> DatasetPublic:
        return cls(
            id=d.id,
            name=d.name,
            owner=d.owner,
            format=d.format,
            bytes=d.bytes,
            sha256=d.sha256,
            rows=d.rows,
            columns=d.columns,
            created_at=d.created_at,
        )


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]


def valid_dataset(dataset_id: str, session: SessionDep, owner: OwnerDep) -> Dataset:
    return dataset_queries.get_dataset(session, dataset_id, owner)


DatasetDep = Annotated[Dataset, Depends(valid_dataset)]


def _unlink_on(session: Session, when: str, path: Path) -> None:
    def unlink(_: Session) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # the row is what counts; a stray file is only disk space
            log.warning("could not remove %s: %s", path, exc)

    event.listen(session, when, unlink, once=True)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={
        **errors(400, 413, 415),
        422: validation_error("an unreadable file or form field"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "name": {"type": "string", "maxLength": 200},
                        },
                    }
                }
            },
        }
    },
)
async def upload_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> DatasetPublic:
    """Upload a CSV, gzipped CSV, Parquet or NPZ file (form fields ``file`` and ``name``)."""
    dataset_id = new_id()
    folder = uploads_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    incoming = folder / f".incoming-{dataset_id}"
    try:
        received = await receive_file(request, incoming, settings.limits.max_dataset_bytes)
        name = received.fields.get("name") or PurePath(received.filename or "").name or "dataset"
        if len(name) > 200:
            raise SpecError(("name",), "at most 200 characters")
        fmt = sniff_format(received.head)
        try:
            info = await run_in_threadpool(describe_file, incoming, fmt)
        except ValueError as exc:
            raise SpecError(("file",), str(exc)) from None
        if info.rows == 0:
            raise SpecError(("file",), "the file holds no rows")
        final = upload_path(settings, dataset_id, fmt)
        incoming.rename(final)
    finally:
        incoming.unlink(missing_ok=True)
    _unlink_on(session, "after_rollback", final)  # a failed insert leaves no orphan file
    dataset = await run_in_threadpool(
        lambda: dataset_queries.create_dataset(
            session,
            dataset_id=dataset_id,
            owner=principal.owner,
            name=name,
            format=fmt,
            path=str(final.relative_to(settings.resolved_data_dir)),
            size=received.size,
            sha256=received.sha256,
            rows=info.rows,
            columns=info.columns,
        )
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetPublic.of(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    session: SessionDep, owner: OwnerDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> DatasetsPublic:
    """Newest first."""
    rows = dataset_queries.list_datasets(session, owner=owner, limit=limit)
    return DatasetsPublic(data=[DatasetPublic.of(d) for d in rows])


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=errors(404))
def get_dataset(dataset: DatasetDep) -> DatasetPublic:
    return DatasetPublic.of(dataset)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Removes the row, and the file once the removal is committed."""
    path = settings.resolved_data_dir / dataset.path
    dataset_queries.delete_dataset(session, dataset)
    _unlink_on(session, "after_commit", path)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
