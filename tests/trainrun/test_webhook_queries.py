"""The webhook outbox: which events are recorded, how senders claim them, how retries settle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries, webhook_queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import JobStatus, WebhookDelivery, utcnow
from trainrun.settings import Settings

Factory = sessionmaker[Session]


def new_job(session: Session, owner: str = "alice") -> str:
    job = queries.create_job(
        session, name="j", spec={}, owner=owner, epochs_total=2, parameter_count=1
    )
    return job.id


def deliveries(factory: Factory) -> list[WebhookDelivery]:
    with factory() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at)))


def test_events_go_to_the_owners_subscribed_webhooks_with_the_job(factory: Factory) -> None:
    with transaction(factory) as session:
        mine = webhook_queries.create_webhook(
            session, owner="alice", url="http://h/a", events=["job.started", "job.succeeded"]
        )
        webhook_queries.create_webhook(
            session, owner="alice", url="http://h/b", events=["job.failed"]
        )
        webhook_queries.create_webhook(
            session, owner="bob", url="http://h/c", events=["job.started", "job.succeeded"]
        )
        job_id = new_job(session)
        other = new_job(session, owner="carol")
    with transaction(factory) as session:
        token = queries.claim_job(session, job_id, "w", 60, 3)
        assert token is not None
        assert queries.claim_job(session, other, "w", 60, 3) is not None
    with transaction(factory) as session:
        queries.record_epoch(session, job_id, token, 1, {}, 60)  # no job.epoch subscriber
        queries.finish_job(session, job_id, token, JobStatus.succeeded)
    rows = deliveries(factory)
    assert [(d.event, d.webhook_id, d.job_id) for d in rows] == [
        ("job.started", mine.id, job_id),
        ("job.succeeded", mine.id, job_id),
    ]
    done = rows[1].payload
    assert done["type"] == "job.succeeded"
    assert done["data"]["status"] == "succeeded" and done["data"]["finished_at"] is not None
    assert done["data"]["id"] == job_id and done["data"]["attempt"] == 1


def test_a_fenced_finish_records_no_event(factory: Factory) -> None:
    with transaction(factory) as session:
        webhook_queries.create_webhook(
            session, owner="alice", url="http://h", events=["job.failed"]
        )
        job_id = new_job(session)
    with transaction(factory) as session:
        assert queries.claim_job(session, job_id, "w", 60, 3) == 1
    with pytest.raises(queries.Fenced), transaction(factory) as session:
        queries.finish_job(session, job_id, 99, JobStatus.failed, "stale worker")
    assert deliveries(factory) == []


def test_retries_back_off_then_give_up(factory: Factory) -> None:
    with transaction(factory) as session:
        webhook_queries.create_webhook(
            session, owner="alice", url="http://h", events=["job.cancelled"]
        )
        queries.request_cancel(session, queries.get_job(session, new_job(session)))
    results = []
    for attempt in (1, 2, 3):
        with transaction(factory) as session:
            session.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))
            [due] = webhook_queries.claim_due(session, limit=10, lease_seconds=30)
            assert due.attempt == attempt
            assert webhook_queries.claim_due(session, limit=10, lease_seconds=30) == []  # leased
            before = utcnow()
            results.append(
                webhook_queries.record_result(
                    session,
                    due.id,
                    due.attempt,
                    response_code=503,
                    error="HTTP 503",
                    max_attempts=3,
                    backoff_base=10,
                    backoff_cap=15,
                )
            )
        [row] = deliveries(factory)
        if attempt < 3:
            wait = (row.next_attempt_at - before).total_seconds()
            assert {1: 9.5 <= wait <= 11, 2: 14.5 <= wait <= 16}[attempt], wait
    assert results == ["pending", "pending", "failed"]
    [row] = deliveries(factory)
    assert (row.status, row.attempts, row.last_response_code) == ("failed", 3, 503)
    with transaction(factory) as session:  # an old attempt can no longer record anything
        assert (
            webhook_queries.record_result(
                session,
                row.id,
                2,
                response_code=200,
                error=None,
                max_attempts=3,
                backoff_base=1,
                backoff_cap=1,
            )
            is None
        )


@pytest.fixture
def pg_factory(pg_settings: Settings) -> Iterator[Factory]:
    engine = make_engine(pg_settings)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.mark.integration
def test_concurrent_senders_claim_disjoint_rows(pg_factory: Factory) -> None:
    with transaction(pg_factory) as session:
        webhook_queries.create_webhook(
            session, owner="alice", url="http://h", events=["job.cancelled"]
        )
        for _ in range(4):
            queries.request_cancel(session, queries.get_job(session, new_job(session)))
    with transaction(pg_factory) as first:
        mine = webhook_queries.claim_due(first, limit=2, lease_seconds=30)
        # While the first sender's claim is still open, a second one skips its locked rows.
        with transaction(pg_factory) as second:
            theirs = webhook_queries.claim_due(second, limit=10, lease_seconds=30)
    assert len(mine) == 2 and len(theirs) == 2
    assert {d.id for d in mine}.isdisjoint(d.id for d in theirs)
    with transaction(pg_factory) as third:
        assert webhook_queries.claim_due(third, limit=10, lease_seconds=30) == []


def test_backoff_doubles_and_is_capped() -> None:
    waits = [webhook_queries.backoff_seconds(n, 1.0, 10.0) for n in range(1, 7)]
    assert waits == [1, 2, 4, 8, 10, 10]
    assert webhook_queries.backoff_seconds(500, 1.0, 60.0) == 60
