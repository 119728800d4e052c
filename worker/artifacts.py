"""Where a job's checkpoint and model files go, recorded in the database under the fence.

Files are named by the claim's fencing token, which no other claim ever gets, so a fenced-off
worker can never overwrite the file the current claim points at; the database row says which
file is current.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from trainrun.artifacts import read_tensors, save_model, sha256_of, write_tensors
from trainrun.db import queries
from trainrun.db.engine import transaction
from trainrun.settings import Settings
from worker.engine import TrainResult
from worker.engine.state import TrainState

log = logging.getLogger(__name__)


class ArtifactStore:
    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, job_id: str, token: int
    ) -> None:
        self.factory = factory
        self.job_id = job_id
        self.token = token
        self.folder = settings.resolved_artifact_dir / job_id

    def _record(self, kind: str, path: Path, epoch: int) -> None:
        with transaction(self.factory) as session:
            previous = queries.record_artifact(
                session,
                self.job_id,
                self.token,
                kind=kind,
                path=str(path),
                size=path.stat().st_size,
                sha256=sha256_of(path),
                epoch=epoch,
            )
        if previous:
            Path(previous).unlink(missing_ok=True)

    def save_checkpoint(self, state: TrainState) -> None:
        path = self.folder / f"checkpoint-{self.token}.safetensors"
        write_tensors(path, state.tensors, {"kind": "checkpoint", **state.meta})
        self._record("checkpoint", path, state.epoch)

    def load_checkpoint(self) -> TrainState | None:
        with transaction(self.factory) as session:
            artifact = queries.get_artifact(session, self.job_id, "checkpoint")
            path = Path(artifact.path) if artifact is not None else None
        if path is None:
            return None
        if not path.exists():
            log.warning("job %s: checkpoint %s is missing; starting over", self.job_id, path)
            return None
        tensors, meta = read_tensors(path)
        return TrainState(tensors, meta)

    def save_model(self, result: TrainResult, spec: dict[str, Any]) -> None:
        path = self.folder / f"model-{self.token}.safetensors"
        epoch = result.best_epoch or result.epochs_run
        save_model(path, result.model, spec, result.input_shape, result.output_width, epoch)
        self._record("model", path, epoch)
