"""Webhooks end to end: a real ``trainrun api`` and ``trainrun worker`` (PostgreSQL, Redis)
deliver signed job events to a real HTTP receiver on loopback, which checks the signatures
itself; the registration API is checked in-process on SQLite."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.main import create_app
from tests.conftest import settings_env
from tests.support import (
    Service,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_for,
    wait_http_ok,
    wait_job_final,
)
from tests.webhook_receiver import Receiver
from trainrun.db import queries, webhook_queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import WebhookDelivery
from trainrun.db.tokens import create_token
from trainrun.settings import Settings

FAST_WEBHOOKS = {"TRAINRUN_WEBHOOK_POLL_SECONDS": "0.2", "TRAINRUN_WEBHOOK_BACKOFF_SECONDS": "1"}


@contextmanager
def service(
    settings: Settings, tmp_path: Path, **extra_env: str
) -> Iterator[tuple[httpx.Client, Service]]:
    """A real API and worker on the test PostgreSQL and Redis; yields a client and the worker."""
    env = service_env(settings_env(settings), **FAST_WEBHOOKS, **extra_env)
    port = free_port()
    api = Service(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Service(["worker"], env, tmp_path / "worker.log")
    with running(api, worker):
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client, worker


def register(
    client: httpx.Client, receiver: Receiver, events: list[str], token: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    created = client.post(
        "/v1/webhooks", json={"url": receiver.url, "events": events}, headers=headers
    )
    assert created.status_code == 201, created.text
    hook: dict[str, Any] = created.json()
    receiver.secret = hook["secret"]
    return hook


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_finished_job_is_delivered_signed(pg_settings: Settings, tmp_path: Path) -> None:
    with Receiver() as receiver, service(pg_settings, tmp_path) as (client, worker):
        hook = register(client, receiver, ["job.started", "job.epoch", "job.succeeded"])
        created = client.post("/v1/jobs", json=sine_spec(epochs=3))
        job = wait_job_final(client, created.json()["id"])
        assert job["status"] == "succeeded", (job, worker.log())

        [done] = wait_for(lambda: receiver.of_type("job.succeeded"), 30, 0.1, "job.succeeded")
        assert done.verified and done.answered == 200
        assert done.body["data"]["id"] == job["id"]
        assert done.body["data"]["status"] == "succeeded"
        assert done.body["data"]["epoch"] == 3
        assert done.headers["content-type"] == "application/json"
        assert len(receiver.of_type("job.started")) == 1
        epochs = wait_for(lambda: len(receiver.of_type("job.epoch")) == 3 or None, 10)
        assert epochs
        assert sorted(r.body["data"]["epoch"] for r in receiver.of_type("job.epoch")) == [1, 2, 3]
        assert all(r.verified for r in receiver.received)

        log = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        assert len(log) == 5
        assert {d["status"] for d in log} == {"succeeded"}
        assert {(d["attempts"], d["last_response_code"]) for d in log} == {(1, 200)}
        by_id = {d["id"]: d for d in log}
        assert by_id[done.headers["webhook-id"]]["event"] == "job.succeeded"
        assert by_id[done.headers["webhook-id"]]["job_id"] == job["id"]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_failing_receiver_is_retried_with_backoff(pg_settings: Settings, tmp_path: Path) -> None:
    with Receiver(fail_first=2) as receiver, service(pg_settings, tmp_path) as (client, worker):
        hook = register(client, receiver, ["job.succeeded"])
        created = client.post("/v1/jobs", json=sine_spec(epochs=2))
        job = wait_job_final(client, created.json()["id"])
        assert job["status"] == "succeeded", (job, worker.log())

        def settled() -> dict[str, Any] | None:
            [d] = client.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
            return d if d["status"] != "pending" else None

        delivery = wait_for(settled, 30, 0.2, "the delivery to settle")
        assert delivery["status"] == "succeeded", delivery
        assert (delivery["attempts"], delivery["last_response_code"]) == (3, 200)
        assert delivery["last_error"] is None and delivery["next_attempt_at"] is None
        assert delivery["delivered_at"] is not None

        first, second, third = receiver.received
        assert [r.answered for r in receiver.received] == [500, 500, 200]
        assert all(r.verified for r in receiver.received)
        assert {r.headers["webhook-id"] for r in receiver.received} == {delivery["id"]}
        assert {r.body["data"]["id"] for r in receiver.received} == {job["id"]}
        # Backoff 1 s, then 2 s (TRAINRUN_WEBHOOK_BACKOFF_SECONDS=1), counted from each reply.
        assert second.at - first.at >= 0.95
        assert third.at - second.at >= 1.95


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_another_owners_job_does_not_notify(pg_settings: Settings, tmp_path: Path) -> None:
    engine = make_engine(pg_settings)
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        alice = create_token(session, "alice")
        bob = create_token(session, "bob")
    try:
        with (
            Receiver() as receiver,
            service(pg_settings, tmp_path, TRAINRUN_AUTH_ENABLED="true") as (client, worker),
        ):
            hook = register(client, receiver, ["job.succeeded"], token=alice)
            as_bob = {"Authorization": f"Bearer {bob}"}
            as_alice = {"Authorization": f"Bearer {alice}"}
            bobs = client.post("/v1/jobs", json=sine_spec(epochs=2), headers=as_bob).json()
            alices = client.post("/v1/jobs", json=sine_spec(epochs=2), headers=as_alice).json()
            for job_id, headers in ((bobs["id"], as_bob), (alices["id"], as_alice)):
                client.headers.update(headers)
                assert wait_job_final(client, job_id)["status"] == "succeeded", worker.log()

            [done] = wait_for(lambda: receiver.of_type("job.succeeded"), 30, 0.1, "alice's event")
            assert done.verified and done.body["data"]["id"] == alices["id"]
            with factory() as session:  # the outbox never held an event of bob's job
                job_ids = set(session.scalars(select(WebhookDelivery.job_id)))
            assert job_ids == {alices["id"]}
            assert all(r.body["data"]["owner"] == "alice" for r in receiver.received)

            client.headers.update(as_bob)
            assert client.get("/v1/webhooks").json() == {"data": []}
            assert client.get(f"/v1/webhooks/{hook['id']}/deliveries").status_code == 404
            assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 404
            client.headers.update(as_alice)
            assert [h["id"] for h in client.get("/v1/webhooks").json()["data"]] == [hook["id"]]
    finally:
        engine.dispose()


def test_registration_validates_and_shows_the_secret_once(sqlite_settings: Settings) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        for url in ("ftp://example.com/x", "javascript:alert(1)", "http://", "example.com"):
            bad = client.post("/v1/webhooks", json={"url": url, "events": ["job.failed"]})
            assert bad.status_code == 422, (url, bad.text)
        for events in ([], ["job.exploded"]):
            bad = client.post("/v1/webhooks", json={"url": "https://x.test/h", "events": events})
            assert bad.status_code == 422, (events, bad.text)

        created = client.post(
            "/v1/webhooks",
            json={"url": "https://x.test/h", "events": ["job.failed", "job.failed", "job.epoch"]},
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert created.headers["location"] == f"/v1/webhooks/{hook['id']}"
        assert hook["events"] == ["job.failed", "job.epoch"]
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*", hook["secret"])
        assert len(base64.b64decode(hook["secret"].removeprefix("whsec_"))) == 24

        listed = client.get("/v1/webhooks").json()["data"]
        assert [h["id"] for h in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        assert "secret" not in client.get(f"/v1/webhooks/{hook['id']}").json()
        assert client.get(f"/v1/webhooks/{hook['id']}/deliveries").json() == {"data": []}

        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        assert client.get(f"/v1/webhooks/{hook['id']}").status_code == 404
        assert client.delete(f"/v1/webhooks/{hook['id']}").status_code == 404


@pytest.mark.timeout(120)
def test_the_webhooks_command_sends_pending_deliveries(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """``trainrun webhooks`` alone (no worker) drains the outbox."""
    engine = make_engine(sqlite_settings)
    factory = make_sessionmaker(engine)
    with Receiver() as receiver:
        with transaction(factory) as session:
            hook = webhook_queries.create_webhook(
                session, owner="anonymous", url=receiver.url, events=["job.cancelled"]
            )
            receiver.secret = hook.secret
            job = queries.create_job(
                session,
                name="queued",
                spec=sine_spec(),
                owner="anonymous",
                epochs_total=3,
                parameter_count=1,
            )
            queries.request_cancel(session, job)  # a queued job ends at once: job.cancelled
        engine.dispose()
        env = service_env({"TRAINRUN_HOME": str(sqlite_settings.home)}, **FAST_WEBHOOKS)
        dispatcher = Service(["webhooks"], env, tmp_path / "webhooks.log")
        with running(dispatcher):
            [got] = wait_for(lambda: receiver.of_type("job.cancelled"), 30, 0.1, "job.cancelled")
        assert got.verified and got.body["data"]["id"] == job.id
        assert got.body["data"]["status"] == "cancelled"
