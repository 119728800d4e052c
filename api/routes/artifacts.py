"""Downloads: the trained model as one safetensors file (weights plus the spec to rebuild it)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import JobDep, SessionDep
from api.responses import errors
from trainrun.db import queries
from trainrun.errors import NotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/model",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(404)},
)
def download_model(job: JobDep, session: SessionDep) -> FileResponse:
    """The model file; rebuild it with ``trainrun.artifacts.load_model(path)``."""
    artifact = queries.get_artifact(session, job.id, "model")
    if artifact is None or not Path(artifact.path).exists():
        raise NotFound(f"job {job.id} has no model yet (status: {job.status})")
    return FileResponse(
        artifact.path,
        media_type="application/octet-stream",
        filename=f"{job.name}-{job.id[:8]}.safetensors",
        headers={"X-Trainrun-Sha256": artifact.sha256, "X-Trainrun-Epoch": str(artifact.epoch)},
    )
