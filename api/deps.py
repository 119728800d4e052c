"""Injected dependencies: settings, the request's session (one transaction), owner, job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from api.auth import ANONYMOUS
from trainrun.db import queries
from trainrun.db.tables import Job
from trainrun.db.tokens import Principal
from trainrun.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: commit on success, roll back on error.

    GET and HEAD requests only read, so they begin without taking SQLite's write lock.
    """
    reads = request.method in ("GET", "HEAD")
    factory = request.app.state.read_sessionmaker if reads else request.app.state.sessionmaker
    with factory() as session, session.begin():
        yield session


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def get_principal(request: Request) -> Principal:
    """The caller, resolved by ``api.auth.require_principal`` on every ``/v1`` route."""
    return getattr(request.state, "principal", ANONYMOUS)


def get_owner(request: Request) -> str | None:
    """The owner filter for reads; ``None`` means "sees everything" (auth off, or admin)."""
    return get_principal(request).visible_owner


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response is sent, so a client that reads
# right after a 201 always finds its job.
# max_concurrency: at most this many requests hold a session at once, the rest wait in the
# event loop. It stays below the threadpool (40 threads) and the pool (50 connections), so a
# finished request always finds a thread to commit and return its connection; without it, 100
# clients left every thread waiting for a connection held by a request waiting for a thread.
SESSION_CONCURRENCY = 32
SessionDep = Annotated[
    Session, Depends(get_session, scope="function", max_concurrency=SESSION_CONCURRENCY)
]
CeleryDep = Annotated[Celery, Depends(get_celery)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def valid_job(job_id: str, session: SessionDep, owner: OwnerDep) -> Job:
    return queries.get_job(session, job_id, owner)


JobDep = Annotated[Job, Depends(valid_job)]
