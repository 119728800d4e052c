"""``execute_job`` in-process against a real SQLite database: the outcomes a task can have."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tests.support import digits_spec
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import JobStatus
from trainrun.settings import Settings
from trainrun.spec import JobSpec
from worker.runner import Outcome, execute_job


def submit(factory: sessionmaker[Session], spec_dict: dict[str, object]) -> str:
    spec = JobSpec.model_validate(spec_dict)
    with transaction(factory) as session:
        job = queries.create_job(
            session, name=spec.name, spec=spec.model_dump(mode="json"), owner="t",
            epochs_total=spec.training.epochs, parameter_count=0,
        )  # fmt: skip
        return job.id


def test_a_job_over_its_time_limit_ends_timed_out(sqlite_settings: Settings) -> None:
    engine = make_engine(sqlite_settings)
    factory = make_sessionmaker(engine)
    spec = digits_spec(epochs=100_000, resources={"time_limit_seconds": 3.0})
    job_id = submit(factory, spec)
    started = time.monotonic()
    assert execute_job(job_id, sqlite_settings, factory) is Outcome.timed_out
    assert time.monotonic() - started < 30
    with factory() as session:
        job = queries.get_job(session, job_id)
    assert job.status == JobStatus.timed_out
    assert job.error is not None and "time limit of 3.0 s" in job.error
    assert 0 < job.epoch_reached < 100_000, job.epoch_reached
    engine.dispose()


def test_a_second_delivery_of_a_finished_job_is_skipped(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    engine = make_engine(sqlite_settings)
    factory = make_sessionmaker(engine)
    job_id = submit(factory, digits_spec(epochs=1))
    assert execute_job(job_id, sqlite_settings, factory) is Outcome.succeeded
    assert execute_job(job_id, sqlite_settings, factory) is Outcome.skipped
    with factory() as session:
        job = queries.get_job(session, job_id)
        assert (job.status, job.attempt) == (JobStatus.succeeded, 1)
        assert queries.get_artifact(session, job_id, "model") is not None
    engine.dispose()
