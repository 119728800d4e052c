"""The sweep scheduler on both backends: slots, launching after a job ends, the median rule,
cancelling."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.support import sine_spec
from trainrun.db import sweep_queries
from trainrun.db.engine import transaction
from trainrun.db.tables import EpochFigures, Job, JobStatus, SweepVariant
from trainrun.sweeps.scheduler import step_after_job, step_sweeps
from trainrun.sweeps.spec import SweepSpec

Factory = sessionmaker[Session]


def new_sweep(factory: Factory, runs: int, max_concurrent: int, **extra: object) -> str:
    spec = SweepSpec.model_validate(
        {"name": "s", "base": sine_spec(), "max_concurrent": max_concurrent, **extra}
    ).model_dump(mode="json", by_alias=True)
    with transaction(factory) as session:
        sweep = sweep_queries.create_sweep(
            session,
            name="s",
            spec=spec,
            owner="anonymous",
            max_concurrent=max_concurrent,
            runs=[(i, 0, None, {"optimizer.lr": i}, sine_spec(), 10) for i in range(runs)],
        )
        return sweep.id


def set_status(factory: Factory, job_id: str, status: JobStatus, epoch: int = 0) -> None:
    with transaction(factory) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status=status.value, epoch_reached=epoch)
        )


def test_slots_fill_up_to_max_concurrent_and_refill_after_a_job_ends(factory: Factory) -> None:
    sweep_id = new_sweep(factory, runs=3, max_concurrent=2)
    rung: list[str] = []
    first = step_sweeps(factory, rung.append)
    assert len(first) == 2 and rung == first
    assert step_sweeps(factory, rung.append) == []  # both slots taken
    set_status(factory, first[0], JobStatus.succeeded)
    third = step_after_job(factory, rung.append, first[0])
    assert len(third) == 1 and rung[-1] == third[0]
    with transaction(factory) as session:
        runs = sweep_queries.sweep_runs(session, [sweep_id])
        assert [r.state for r, _ in runs] == ["launched"] * 3
        assert {j.sweep_id for _, j in runs if j} == {sweep_id}
        assert [j.sweep_variant for _, j in runs if j] == [0, 1, 2]


def test_median_rule_cancels_the_worse_running_run(factory: Factory) -> None:
    sweep_id = new_sweep(
        factory,
        runs=3,
        max_concurrent=3,
        median_stopping={"metric": "val.loss", "min_epochs": 2, "min_peers": 2},
    )
    job_ids = step_sweeps(factory, lambda _: None)
    losses = {job_ids[0]: 0.2, job_ids[1]: 0.3, job_ids[2]: 0.9}
    with transaction(factory) as session:
        for job_id, loss in losses.items():
            session.add_all(
                EpochFigures(
                    job_id=job_id, epoch=e, phase="val", attempt=1, n=10, loss_sum=loss * 10
                )
                for e in (1, 2)
            )
    for job_id in job_ids:
        set_status(factory, job_id, JobStatus.running, epoch=2)
    step_sweeps(factory, lambda _: None)
    with transaction(factory) as session:
        jobs = [session.get(Job, j) for j in job_ids]
        assert [j.cancel_requested for j in jobs if j] == [False, False, True]
        stopped = sweep_queries.sweep_runs(session, [sweep_id])[2][0]
        assert stopped.stop_reason is not None
        assert stopped.stop_reason.startswith("stopped by median rule at epoch 2: val.loss 0.9")


def test_cancel_ends_waiting_runs_and_stops_launching(factory: Factory) -> None:
    sweep_id = new_sweep(factory, runs=3, max_concurrent=1)
    (first,) = step_sweeps(factory, lambda _: None)
    with transaction(factory) as session:
        sweep_queries.cancel_sweep(session, sweep_queries.get_sweep(session, sweep_id))
    with transaction(factory) as session:
        runs = sweep_queries.sweep_runs(session, [sweep_id])
        assert [r.state for r, _ in runs] == ["launched", "cancelled", "cancelled"]
        job = session.get(Job, first)
        assert job is not None and job.status == JobStatus.cancelled.value
    assert step_sweeps(factory, lambda _: None) == []
    with transaction(factory) as session:
        assert session.scalar(select(func.count()).select_from(SweepVariant)) == 3
