"""Validate and dry-build every run of a sweep at submit, as ``POST /v1/jobs`` does for one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trainrun.errors import SpecError
from trainrun.planning import plan_job
from trainrun.settings import Limits
from trainrun.spec import JobSpec
from trainrun.sweeps.expand import Run, SweepInvalid, expand_runs, variant_error
from trainrun.sweeps.spec import SweepSpec

MAX_ERRORS = 20  # one bad base spec would otherwise repeat its error for every variant


@dataclass(frozen=True)
class PreparedRun:
    run: Run
    spec: JobSpec
    parameter_count: int


def prepare_runs(sweep: SweepSpec, limits: Limits) -> list[PreparedRun]:
    """Every run validated as a JobSpec and planned; ``SweepInvalid`` names each bad variant."""
    prepared: list[PreparedRun] = []
    errors: list[dict[str, Any]] = []
    failed: set[int] = set()
    for run in expand_runs(sweep):
        if run.variant in failed:
            continue  # its other seeds fail the same way
        try:
            spec = JobSpec.model_validate(run.spec)
            plan = plan_job(spec, limits)
        except ValidationError as exc:
            failed.add(run.variant)
            errors.extend(
                variant_error(run.variant, tuple(e["loc"]), e["msg"], run.overrides, e["type"])
                for e in exc.errors()
            )
        except SpecError as exc:
            failed.add(run.variant)
            errors.append(
                variant_error(run.variant, exc.loc, exc.message, run.overrides, "spec_invalid")
            )
        else:
            prepared.append(PreparedRun(run, spec, plan.parameter_count))
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise SweepInvalid(errors[:MAX_ERRORS])
    return prepared
