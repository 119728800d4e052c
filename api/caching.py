"""Conditional GETs for job-derived representations: an ETag from the job's state, 304s."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from fastapi import Request, Response

from trainrun.db.tables import Job, JobStatus


def job_etag(jobs: Iterable[Job], variant: str) -> str:
    """Changes whenever any job's status, last stored epoch or update time changes."""
    h = hashlib.sha256(variant.encode())
    for job in jobs:
        h.update(
            f"|{job.id}:{job.status}:{job.epoch_reached}:{job.updated_at.isoformat()}".encode()
        )
    return f'"{h.hexdigest()[:32]}"'


def cache_headers(jobs: Iterable[Job], etag: str) -> dict[str, str]:
    # Figures of an ended job never change; a running job's must be revalidated every time.
    final = all(JobStatus(j.status).is_final for j in jobs)
    control = "private, max-age=3600" if final else "private, no-cache"
    return {"ETag": etag, "Cache-Control": control}


def not_modified(request: Request, headers: Mapping[str, str]) -> Response | None:
    """A 304 when the client's ``If-None-Match`` holds the current ETag (weak or strong)."""
    given = request.headers.get("if-none-match")
    if not given:
        return None
    tags = {t.strip().removeprefix("W/") for t in given.split(",")}
    if "*" in tags or headers["ETag"] in tags:
        return Response(status_code=304, headers=dict(headers))
    return None
