"""``GET /metrics`` after a real job, heartbeat metrics of running jobs, and JSON worker logs."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api.main import create_app
from tests.conftest import settings_env
from tests.support import (
    Service,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_http_ok,
    wait_job_final,
)
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import Job, utcnow
from trainrun.settings import Settings

TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample, keyed by (sample name, labels)."""
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_metrics_after_a_job_ran_and_the_worker_logs_json(
    pg_settings: Settings, tmp_path: Path
) -> None:
    env = service_env(settings_env(pg_settings), TRAINRUN_LOG_FORMAT="json")
    port = free_port()
    api = Service(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Service(["worker"], env, tmp_path / "worker.log")
    with running(api, worker):
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post("/v1/jobs", json=sine_spec(epochs=3))
            assert created.status_code == 201, created.text
            job = wait_job_final(client, created.json()["id"])
            assert job["status"] == "succeeded", (job, worker.log())
            assert client.get("/v1/no-such-thing").status_code == 404
            response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        families, samples = scrape(response.text)

    assert {
        "trainrun_jobs",
        "trainrun_queue_depth",
        "trainrun_broker_queue_length",
        "trainrun_running_jobs",
        "trainrun_job_heartbeat_age_seconds",
        "trainrun_recent_epoch_duration_seconds",
        "trainrun_webhook_deliveries_pending",
        "trainrun_http_request_duration_seconds",
    } <= families
    assert value(samples, "trainrun_jobs", state="succeeded") == 1
    for state in ("queued", "running", "failed", "cancelled", "timed_out"):
        assert value(samples, "trainrun_jobs", state=state) == 0
    assert value(samples, "trainrun_queue_depth") == 0
    assert value(samples, "trainrun_broker_queue_length", queue=pg_settings.queue_name) == 0
    assert value(samples, "trainrun_running_jobs", lease="fresh") == 0
    assert value(samples, "trainrun_running_jobs", lease="expired") == 0

    epochs = "trainrun_recent_epoch_duration_seconds"
    assert value(samples, f"{epochs}_bucket", le="+Inf") == 3
    assert value(samples, f"{epochs}_gcount") == 3
    assert 0 < value(samples, f"{epochs}_gsum") < 600
    assert value(samples, f"{epochs}_bucket", le="3600.0") == 3

    http = "trainrun_http_request_duration_seconds"
    assert value(samples, f"{http}_count", method="POST", route="/v1/jobs", status="201") == 1
    polls = value(samples, f"{http}_count", method="GET", route="/v1/jobs/{job_id}", status="200")
    assert polls >= 1
    assert value(samples, f"{http}_count", method="GET", route="<unmatched>", status="404") == 1
    assert not any(job["id"] in dict(labels).get("route", "") for _, labels in samples)

    # The worker's log records are JSON lines (only Celery's printed banner is not); the job's
    # records carry its id and attempt.
    lines = worker.log().splitlines()
    assert not [ln for ln in lines if TEXT_RECORD.match(ln)], worker.log()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, worker.log()
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    about_job = [r for r in records if r.get("job_id") == job["id"]]
    assert about_job, records
    assert {r["attempt"] for r in about_job} == {1}
    assert any("succeeded" in r["message"] for r in about_job)
    # The API's lines too, uvicorn's access log included.
    api_lines = api.log().splitlines()
    assert not [ln for ln in api_lines if TEXT_RECORD.match(ln) or ln.startswith("INFO:")]
    api_records = [json.loads(line) for line in api_lines if line.startswith("{")]
    assert any(r["logger"] == "uvicorn.access" and "/metrics" in r["message"] for r in api_records)


def test_heartbeat_metrics_of_running_jobs(sqlite_settings: Settings) -> None:
    engine = make_engine(sqlite_settings)
    factory = make_sessionmaker(engine)
    ids: list[str] = []
    with transaction(factory) as session:
        for name in ("alive", "lost"):
            job = queries.create_job(
                session, name=name, spec={}, owner="o", epochs_total=1, parameter_count=1
            )
            assert queries.claim_job(session, job.id, f"host:{name}", 60, 3) == 1
            ids.append(job.id)
        now = utcnow()
        values: list[dict[str, Any]] = [
            {"heartbeat_at": now - timedelta(seconds=5), "lease_expires_at": now + timedelta(60)},
            {"heartbeat_at": now - timedelta(seconds=90), "lease_expires_at": now - timedelta(1)},
        ]
        for job_id, v in zip(ids, values, strict=True):
            session.execute(update(Job).where(Job.id == job_id).values(**v))
    engine.dispose()

    with TestClient(create_app(sqlite_settings)) as client:
        _, samples = scrape(client.get("/metrics").text)
    assert value(samples, "trainrun_jobs", state="running") == 2
    assert value(samples, "trainrun_running_jobs", lease="fresh") == 1
    assert value(samples, "trainrun_running_jobs", lease="expired") == 1
    age = "trainrun_job_heartbeat_age_seconds"
    assert 5 <= value(samples, age, job_id=ids[0], worker="host:alive") < 60
    assert 90 <= value(samples, age, job_id=ids[1], worker="host:lost") < 150
    assert ("trainrun_broker_queue_length", frozenset({("queue", "trainrun")})) not in samples
