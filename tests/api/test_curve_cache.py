"""The per-process curve cache gives exactly what a fresh read gives, on both backends."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from api.curve_cache import CurveCache
from tests.trainrun.test_curve_blocks import from_rows
from tests.trainrun.test_queries import LEASE, claim, expire_lease, load, new_job
from trainrun.db import queries
from trainrun.db.curve_blocks import PHASE_CODES, Arrays
from trainrun.db.engine import transaction
from trainrun.db.tables import JobStatus

Factory = sessionmaker[Session]


def row(loss: float) -> dict[str, Any]:
    return {"n": 10, "loss_sum": loss, "penalty": 0.0, "correct": 5.0, "ties": 0, "seconds": 0.1}


def write(
    factory: Factory, job_id: str, token: int, epoch: int, phases: tuple[str, ...], loss: float
) -> None:
    with transaction(factory) as session:
        figures = {p: row(loss) for p in phases}
        queries.record_epoch(session, job_id, token, epoch, figures, LEASE)


def assert_same_as_fresh(factory: Factory, cache: CurveCache, job_id: str) -> Arrays:
    with factory() as session:
        job = queries.get_job(session, job_id)
        cached = cache.arrays(session, job)
    fresh = from_rows(factory, job_id)
    for c, values in fresh.items():
        np.testing.assert_array_equal(cached[c].astype(np.float64), values, err_msg=c)
    return cached


def test_cache_follows_a_running_job_a_resume_and_the_end(factory: Factory) -> None:
    cache = CurveCache()
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    assert assert_same_as_fresh(factory, cache, job_id)["epoch"].tolist() == []

    for epoch in (1, 2):
        write(factory, job_id, token, epoch, ("train", "train_eval", "val"), 1.0 / epoch)
        assert_same_as_fresh(factory, cache, job_id)  # extended with the new epoch only

    # The worker dies; a new claim resumes from epoch 1 and re-writes epoch 2 differently.
    expire_lease(factory, job_id)
    token2 = claim(factory, job_id)
    assert token2 is not None and token2 != token
    write(factory, job_id, token2, 2, ("train", "train_eval", "val"), 0.25)
    cached = assert_same_as_fresh(factory, cache, job_id)
    assert cached["loss_sum"][-1] == 0.25

    # The test row lands at the best epoch (1), before the last; then the job ends.
    write(factory, job_id, token2, 1, ("test",), 0.5)
    with transaction(factory) as session:
        queries.finish_job(session, job_id, token2, JobStatus.succeeded)
    cached = assert_same_as_fresh(factory, cache, job_id)
    assert PHASE_CODES["test"] in cached["phase"]
    assert load(factory, job_id).status == JobStatus.succeeded


def test_cached_responses_are_kept_only_for_ended_jobs(factory: Factory) -> None:
    cache = CurveCache()
    job_id = new_job(factory)
    token = claim(factory, job_id)
    assert token is not None
    write(factory, job_id, token, 1, ("train", "val"), 1.0)
    with factory() as session:
        job = queries.get_job(session, job_id)
        cache.arrays(session, job)
    cache.keep_response(job, "v", b"running")
    assert cache.response(job, "v") is None
    with transaction(factory) as session:
        queries.finish_job(session, job_id, token, JobStatus.succeeded)
    with factory() as session:
        job = queries.get_job(session, job_id)
        cache.arrays(session, job)
    cache.keep_response(job, "v", b"ended")
    assert cache.response(job, "v") == b"ended"


def test_the_cache_is_bounded_by_rows(factory: Factory) -> None:
    cache = CurveCache(max_rows=4)
    ids = []
    for name in ("a", "b"):
        job_id = new_job(factory, name)
        token = claim(factory, job_id)
        assert token is not None
        write(factory, job_id, token, 1, ("train", "train_eval", "val"), 1.0)
        ids.append(job_id)
        assert_same_as_fresh(factory, cache, job_id)
    assert list(cache._entries) == [ids[1]]  # the older entry made room
