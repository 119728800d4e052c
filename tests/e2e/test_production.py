"""Production mode as an operator runs it: ``trainrun db upgrade``, ``trainrun api`` and
``trainrun worker`` as separate processes against the local PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

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
from trainrun.settings import Settings

pytestmark = pytest.mark.e2e


def test_job_submitted_over_http_trains_on_a_separate_worker(
    pg_settings: Settings, tmp_path: Path
) -> None:
    env = service_env(settings_env(pg_settings))
    port = free_port()
    api = Service(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Service(["worker"], env, tmp_path / "worker.log")
    with running(api, worker):
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post("/v1/jobs", json=sine_spec(epochs=4))
            assert created.status_code == 201, created.text
            assert created.headers["location"] == f"/v1/jobs/{created.json()['id']}"
            job = wait_job_final(client, created.json()["id"])
            assert job["status"] == "succeeded", (job, worker.log())
            assert job["attempt"] == 1
            assert job["epoch"] == job["epochs_total"] == 4

            curves = client.get(f"/v1/jobs/{job['id']}/curves").json()
            assert curves["epochs"] == [1, 2, 3, 4]
            for phase in ("train", "train_eval", "val"):
                for metric in ("loss", "accuracy", "tie_rate"):
                    values = curves["series"][phase][metric]
                    assert len(values) == 4 and all(v is not None for v in values), (phase, metric)
