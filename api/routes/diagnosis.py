"""Diagnosis: findings about a job's curves, each naming why, with its evidence."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError

from api.deps import JobDep, SessionDep
from api.responses import errors
from trainrun.datasets import load_table, split_table
from trainrun.db import queries
from trainrun.diagnosis import ClassPriors, Diagnosis, Finding, diagnose
from trainrun.errors import Conflict
from trainrun.spec import JobSpec

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class EvidencePublic(BaseModel):
    epochs: list[int] = Field(description="the epochs the finding rests on")
    figures: dict[str, Any] = Field(description="the figures it rests on (finite or null)")


class FindingPublic(BaseModel):
    code: str = Field(
        description="diverged | degenerate_predictions | not_learning | penalty_dominates | "
        "overfitting | val_beats_train"
    )
    severity: Literal["info", "warning", "error"]
    title: str
    message: str = Field(description="one paragraph: what the curves show and why")
    evidence: EvidencePublic

    @classmethod
    def of(cls, f: Finding) -> FindingPublic:
        return cls(
            code=f.code,
            severity=f.severity,
            title=f.title,
            message=f.message,
            evidence=EvidencePublic(epochs=list(f.epochs), figures=f.figures),
        )


class DiagnosisPublic(BaseModel):
    job_id: str
    status: str
    task: str | None
    epoch: int = Field(description="last epoch diagnosed (0: no figures yet)")
    summary: str
    findings: list[FindingPublic]

    @classmethod
    def of(cls, job_id: str, d: Diagnosis) -> DiagnosisPublic:
        return cls(
            job_id=job_id,
            status=d.status,
            task=d.task,
            epoch=d.epoch,
            summary=d.summary,
            findings=[FindingPublic.of(f) for f in d.findings],
        )


@lru_cache(maxsize=64)
def _split_counts(data: Any, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Per-class row counts of the train and val splits (cached: the split is seeded)."""
    table = load_table(data.source, data.params)
    if table.task != "classification":
        return None
    s = data.split
    split = split_table(table, s.train, s.val, s.test, seed, s.stratify)
    k = table.n_classes
    return (
        tuple(int(c) for c in np.bincount(split.train.y, minlength=k)),
        tuple(int(c) for c in np.bincount(split.val.y, minlength=k)),
    )


def class_priors(spec: JobSpec) -> ClassPriors | None:
    """The split's class frequencies, or None where the data cannot be loaded here."""
    try:
        counts = _split_counts(spec.data, spec.seed)  # frozen params: hashable
    except Exception as exc:  # the diagnosis then assumes uniform frequencies
        log.info("class frequencies unavailable for %s: %s", spec.data.source, exc)
        return None
    return None if counts is None else ClassPriors.from_counts(*counts)


@router.get("/{job_id}/diagnosis", response_model=DiagnosisPublic, responses=errors(404, 409))
def get_diagnosis(job: JobDep, session: SessionDep) -> DiagnosisPublic:
    """What the stored curves say, and why; works while the job runs."""
    try:
        spec = JobSpec.model_validate(job.spec)
    except ValidationError as exc:
        raise Conflict(f"job {job.id}'s stored spec no longer validates: {exc}") from None
    rows = queries.figures_for_job(session, job.id)
    return DiagnosisPublic.of(
        job.id, diagnose(spec, rows, job.status, job.error, class_priors(spec))
    )
