"""Job state queries on both backends: the claim, the fence, upserts, cancel, pagination."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import EpochFigures, Job, JobStatus, utcnow
from trainrun.settings import Settings

Factory = sessionmaker[Session]
LEASE = 60.0


def new_job(factory: Factory, name: str = "job", **values: Any) -> str:
    with transaction(factory) as session:
        job = queries.create_job(
            session,
            name=name,
            spec={"name": name},
            owner="alice",
            epochs_total=5,
            parameter_count=10,
        )
        for key, value in values.items():
            setattr(job, key, value)
        session.flush()
        return job.id


def load(factory: Factory, job_id: str) -> Job:
    with factory() as session:
        return queries.get_job(session, job_id)


def claim(factory: Factory, job_id: str, worker: str = "w1", max_attempts: int = 3) -> int | None:
    with transaction(factory) as session:
        return queries.claim_job(session, job_id, worker, LEASE, max_attempts)


def expire_lease(factory: Factory, job_id: str) -> None:
    with transaction(factory) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def figures(factory: Factory, job_id: str) -> list[EpochFigures]:
    with factory() as session:
        return list(queries.figures_for_job(session, job_id))


def stats(n: int, loss_sum: float, correct: float | None = None) -> dict[str, Any]:
    return {
        "n": n,
        "loss_sum": loss_sum,
        "penalty": 0.5,
        "correct": correct,
        "ties": 0,
        "seconds": 0.1,
    }


def test_claim_gives_attempt_1_and_a_duplicate_delivery_gets_nothing(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id, "w1") == 1
    assert claim(factory, job_id, "w2") is None

    job = load(factory, job_id)
    assert job.status == JobStatus.running
    assert job.attempt == 1
    assert job.worker == "w1"
    assert job.started_at is not None
    assert job.lease_expires_at is not None
    assert job.lease_expires_at > utcnow() + timedelta(seconds=LEASE - 10)


def test_claim_of_an_unknown_job_is_none(factory: Factory) -> None:
    assert claim(factory, "0" * 32) is None


def test_expired_lease_is_reclaimed_and_the_old_token_fenced(factory: Factory) -> None:
    job_id = new_job(factory)
    old = claim(factory, job_id, "w1")
    assert old == 1
    with transaction(factory) as session:
        queries.record_epoch(session, job_id, old, 1, {"train": stats(10, 5.0)}, LEASE)
    first_start = load(factory, job_id).started_at

    expire_lease(factory, job_id)
    new = claim(factory, job_id, "w2")
    assert new == 2
    before = load(factory, job_id)
    assert before.worker == "w2"
    assert before.started_at == first_start  # the first start is kept

    # Every write of the old attempt is refused, even when its transaction then commits.
    with transaction(factory) as session:
        with pytest.raises(queries.Fenced):
            queries.record_epoch(
                session, job_id, old, 2, {"train": stats(99, 99.0), "val": stats(9, 9.0)}, LEASE
            )
        with pytest.raises(queries.Fenced):
            queries.heartbeat(session, job_id, old, 10_000)
        with pytest.raises(queries.Fenced):
            queries.finish_job(session, job_id, old, JobStatus.succeeded)
        with pytest.raises(queries.Fenced):
            queries.release_job(session, job_id, old)

    after = load(factory, job_id)
    assert after.status == JobStatus.running
    assert after.attempt == 2
    assert after.epoch_reached == 1
    assert after.lease_expires_at == before.lease_expires_at
    assert after.heartbeat_at == before.heartbeat_at
    assert after.finished_at is None
    assert [(f.epoch, f.phase, f.attempt) for f in figures(factory, job_id)] == [(1, "train", 1)]

    # The new attempt still writes.
    with transaction(factory) as session:
        assert queries.heartbeat(session, job_id, new, LEASE) is False
        queries.record_epoch(session, job_id, new, 2, {"train": stats(10, 4.0)}, LEASE)
        queries.finish_job(session, job_id, new, JobStatus.succeeded)
    done = load(factory, job_id)
    assert (done.status, done.epoch_reached) == (JobStatus.succeeded, 2)
    assert done.finished_at is not None and done.lease_expires_at is None


def test_a_finished_job_fences_its_own_token(factory: Factory) -> None:
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    with transaction(factory) as session:
        queries.finish_job(session, job_id, token, JobStatus.failed, error="boom")
    with transaction(factory) as session, pytest.raises(queries.Fenced):
        queries.record_epoch(session, job_id, token, 1, {"train": stats(1, 1.0)}, LEASE)
    assert figures(factory, job_id) == []
    expire_lease(factory, job_id)
    assert claim(factory, job_id) is None  # a final job is never claimed again
    job = load(factory, job_id)
    assert (job.status, job.error) == (JobStatus.failed, "boom")


def test_a_live_lease_is_not_claimable(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id, "w1") == 1
    with transaction(factory) as session:
        queries.heartbeat(session, job_id, 1, LEASE)
    assert claim(factory, job_id, "w2") is None


def test_record_epoch_upserts_one_row_per_phase(factory: Factory) -> None:
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    with transaction(factory) as session:
        queries.record_epoch(
            session, job_id, token, 1, {"train": stats(10, 8.0, 3), "val": stats(5, 4.0, 1)}, LEASE
        )
    with transaction(factory) as session:
        queries.record_epoch(
            session,
            job_id,
            token,
            1,
            {"train": stats(10, 6.0, 7), "val": stats(5, 2.0, 4), "train_eval": stats(10, 5.0, 6)},
            LEASE,
        )
    rows = {(f.epoch, f.phase): f for f in figures(factory, job_id)}
    assert sorted(rows) == [(1, "train"), (1, "train_eval"), (1, "val")]
    assert (rows[1, "train"].loss_sum, rows[1, "train"].correct) == (6.0, 7)
    assert (rows[1, "val"].loss_sum, rows[1, "val"].correct) == (2.0, 4)
    assert rows[1, "train_eval"].n == 10
    assert load(factory, job_id).epoch_reached == 1


def test_record_epoch_never_moves_epoch_reached_back(factory: Factory) -> None:
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    with transaction(factory) as session:
        queries.record_epoch(session, job_id, token, 3, {"val": stats(5, 1.0)}, LEASE)
        queries.record_epoch(session, job_id, token, 2, {"val": stats(5, 2.0)}, LEASE)
    assert load(factory, job_id).epoch_reached == 3
    assert [f.epoch for f in figures(factory, job_id)] == [2, 3]
    with factory() as session:
        assert [f.epoch for f in queries.figures_for_job(session, job_id, since_epoch=2)] == [3]


def test_a_resumed_attempt_overwrites_figures_and_takes_their_attempt(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id) == 1
    with transaction(factory) as session:
        queries.record_epoch(session, job_id, 1, 1, {"train": stats(10, 9.0)}, LEASE)
    expire_lease(factory, job_id)
    assert claim(factory, job_id) == 2
    with transaction(factory) as session:
        queries.record_epoch(session, job_id, 2, 1, {"train": stats(10, 3.0)}, LEASE)
    [row] = figures(factory, job_id)
    assert (row.attempt, row.loss_sum) == (2, 3.0)


def test_claim_respects_max_attempts(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id, max_attempts=2) == 1
    expire_lease(factory, job_id)
    assert claim(factory, job_id, max_attempts=2) == 2
    expire_lease(factory, job_id)
    assert claim(factory, job_id, max_attempts=2) is None
    assert load(factory, job_id).attempt == 2
    with transaction(factory) as session:
        assert queries.fail_exhausted(session, max_attempts=2) == 1
    job = load(factory, job_id)
    assert job.status == JobStatus.failed
    assert job.error is not None and "2 attempts" in job.error


def test_release_does_not_count_the_attempt(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id, max_attempts=1) == 1
    with transaction(factory) as session:
        queries.release_job(session, job_id, 1)
    job = load(factory, job_id)
    assert (job.status, job.attempt, job.enqueued_at) == (JobStatus.queued, 0, None)
    # The attempt is given back, the fencing token is not: the next claim gets a new one.
    assert claim(factory, job_id, max_attempts=1) == 2
    assert load(factory, job_id).attempt == 1
    with transaction(factory) as session, pytest.raises(queries.Fenced):
        queries.heartbeat(session, job_id, 1, LEASE)


def test_claim_respects_cancel_requested(factory: Factory) -> None:
    queued = new_job(factory, cancel_requested=True)
    assert claim(factory, queued) is None

    running = new_job(factory)
    assert claim(factory, running) == 1
    with transaction(factory) as session:
        queries.request_cancel(session, queries.get_job(session, running))
    with transaction(factory) as session:
        assert queries.heartbeat(session, running, 1, LEASE) is True  # the worker is told
    expire_lease(factory, running)
    assert claim(factory, running) is None  # and nobody picks it up again
    assert load(factory, running).status == JobStatus.running  # its worker (or the reaper) ends it


def test_request_cancel_on_a_queued_job_ends_it_at_once(factory: Factory) -> None:
    job_id = new_job(factory)
    with transaction(factory) as session:
        job = queries.request_cancel(session, queries.get_job(session, job_id))
        assert job.status == JobStatus.cancelled
    job = load(factory, job_id)
    assert job.status == JobStatus.cancelled
    assert job.cancel_requested is True
    assert job.finished_at is not None
    assert claim(factory, job_id) is None


def test_request_cancel_on_a_final_job_changes_nothing(factory: Factory) -> None:
    job_id = new_job(factory)
    assert claim(factory, job_id) == 1
    with transaction(factory) as session:
        queries.finish_job(session, job_id, 1, JobStatus.succeeded)
    with transaction(factory) as session:
        queries.request_cancel(session, queries.get_job(session, job_id))
    job = load(factory, job_id)
    assert (job.status, job.cancel_requested) == (JobStatus.succeeded, False)


def test_get_job_hides_other_owners_jobs(factory: Factory) -> None:
    job_id = new_job(factory)
    with factory() as session:
        assert queries.get_job(session, job_id, "alice").id == job_id
        with pytest.raises(queries.NotFound):
            queries.get_job(session, job_id, "bob")
        with pytest.raises(queries.NotFound):
            queries.get_job(session, "f" * 32)


def test_list_jobs_pages_newest_first_each_job_once(factory: Factory) -> None:
    base = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # Ties on created_at (broken by id), whole seconds, and one job of another status mixed in.
    offsets = [0, 0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 7]
    ids: list[tuple[datetime, str]] = []
    for i, off in enumerate(offsets):
        created = base + timedelta(seconds=off, microseconds=0 if i % 3 else 250)
        status = JobStatus.running if i % 4 == 1 else JobStatus.queued
        job_id = new_job(factory, f"job-{i}", created_at=created, status=status.value)
        if status == JobStatus.queued:
            ids.append((created, job_id))
    expected = [job_id for _, job_id in sorted(ids, reverse=True)]

    for limit in (1, 2, 5, len(expected), 100):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            with factory() as session:
                page = queries.list_jobs(
                    session, owner="alice", status="queued", limit=limit, cursor=cursor
                )
            assert len(page.jobs) <= limit
            seen.extend(j.id for j in page.jobs)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
            assert pages <= len(expected), "the cursor does not advance"
        assert seen == expected, limit

    with factory() as session:
        assert (
            queries.list_jobs(session, owner="bob", status=None, limit=10, cursor=None).jobs == []
        )
        everything = queries.list_jobs(session, owner=None, status=None, limit=100, cursor=None)
        assert len(everything.jobs) == len(offsets)
        assert everything.next_cursor is None
        with pytest.raises(ValueError):
            queries.list_jobs(session, owner=None, status=None, limit=10, cursor="not-a-cursor")


def race_claims(factory: Factory, job_id: str, racers: int) -> list[int | None]:
    """``racers`` threads, each connected, released together to claim the same job."""
    barrier = threading.Barrier(racers)
    tokens: list[int | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race(n: int) -> None:
        try:
            with factory() as session, session.begin():
                session.connection()  # connect before the race starts
                barrier.wait(timeout=10)
                token = queries.claim_job(session, job_id, f"w{n}", LEASE, 3)
            with lock:
                tokens.append(token)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(tokens) == racers
    return tokens


def test_eight_racing_claims_yield_one_token(pg_settings: Settings) -> None:
    engine = make_engine(pg_settings, pool_size=8, max_overflow=0)
    try:
        factory = make_sessionmaker(engine)
        for _ in range(3):
            job_id = new_job(factory)
            tokens = race_claims(factory, job_id, 8)
            assert sorted(tokens, key=lambda t: t or 0) == [None] * 7 + [1]
            with factory() as session:
                job = session.scalars(select(Job).where(Job.id == job_id)).one()
                assert (job.attempt, job.status) == (1, JobStatus.running)
    finally:
        engine.dispose()
