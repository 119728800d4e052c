"""GET /v1/jobs/{id}/diagnosis against a real API process on SQLite, figures written by the ORM."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    api_process,
    digits_spec,
    service_env,
    sine_spec,
)
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.settings import Settings
from trainrun.spec import JobSpec

N = 2000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """One API process for the module (it only reads), on a migrated SQLite home."""
    tmp = tmp_path_factory.mktemp("diagnosis")
    home = tmp / "home"
    env = service_env(TRAINRUN_HOME=str(home), TRAINRUN_LOG_LEVEL="WARNING")
    with api_process(tmp, env) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c, home


@pytest.fixture
def client(service: tuple[httpx.Client, Path]) -> httpx.Client:
    return service[0]


@pytest.fixture
def home(service: tuple[httpx.Client, Path]) -> Path:
    return service[1]


def figures(loss: float, accuracy: float, tie_rate: float = 0.0) -> dict[str, Any]:
    return {
        "n": N,
        "loss_sum": loss * N,
        "penalty": 0.0,
        "correct": accuracy * N,
        "ties": round(tie_rate * N),
        "seconds": 0.1,
    }


def insert_job(home: Path, raw: dict[str, Any], epochs: list[dict[str, dict[str, Any]]]) -> str:
    """A job claimed as a worker would, with one ``record_epoch`` per entry of ``epochs``."""
    spec = JobSpec.model_validate(raw)
    engine = make_engine(Settings(home=home))
    factory = make_sessionmaker(engine)
    try:
        with transaction(factory) as s:
            job = queries.create_job(
                s,
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                owner="anonymous",
                epochs_total=spec.training.epochs,
                parameter_count=1,
            )
            job_id = job.id
        with transaction(factory) as s:
            token = queries.claim_job(s, job_id, "test-worker", 60.0, 3)
        assert token is not None
        for epoch, phases in enumerate(epochs, start=1):
            with transaction(factory) as s:
                queries.record_epoch(s, job_id, token, epoch, phases, 60.0)
    finally:
        engine.dispose()
    return job_id


def test_a_seed_000_run_is_diagnosed_while_running(client: httpx.Client, home: Path) -> None:
    # Dropout lowers train-mode accuracy; eval mode on the train set agrees with val.
    epoch = {
        "train": figures(0.50, 0.80),
        "train_eval": figures(0.35, 0.90),
        "val": figures(0.35, 0.90),
    }
    job_id = insert_job(home, sine_spec(epochs=10), [epoch] * 4)
    r = client.get(f"/v1/jobs/{job_id}/diagnosis")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job_id"] == job_id and body["status"] == "running"
    assert body["task"] == "classification" and body["epoch"] == 4
    [finding] = body["findings"]
    assert finding["code"] == "val_beats_train" and finding["severity"] == "info"
    assert finding["evidence"]["epochs"] == [2, 3, 4]
    assert finding["evidence"]["figures"]["causes"] == ["train_mode_layers"]
    assert finding["evidence"]["figures"]["layers"] == ["model.layers[2]: dropout p=0.5"]
    assert "model.layers[2]" in finding["message"]
    assert body["summary"].startswith("1 finding in 4 epochs (running)")


def test_a_relu_on_the_logits_is_diagnosed(client: httpx.Client, home: Path) -> None:
    raw = digits_spec(epochs=5)
    raw["model"] = {"kind": "sequential", "layers": [{"linear": 10}, "relu"]}
    stuck = figures(math.log(10), 0.1, tie_rate=1.0)
    job_id = insert_job(home, raw, [{"train": stuck, "train_eval": stuck, "val": stuck}] * 3)
    body = client.get(f"/v1/jobs/{job_id}/diagnosis").json()
    codes = [f["code"] for f in body["findings"]]
    assert codes == ["degenerate_predictions", "not_learning"]
    degenerate = body["findings"][0]
    assert degenerate["evidence"]["figures"]["final_activation"] == "model.layers[1]: relu"
    # digits' class frequencies come from the split itself, not a uniform guess
    assert body["findings"][1]["evidence"]["figures"]["class_priors"] == "from the split"


def test_a_job_without_figures_and_an_unknown_job(client: httpx.Client, home: Path) -> None:
    job_id = insert_job(home, sine_spec(), [])
    body = client.get(f"/v1/jobs/{job_id}/diagnosis").json()
    assert body["findings"] == [] and body["epoch"] == 0
    r = client.get("/v1/jobs/0123456789abcdef0123456789abcdef/diagnosis")
    assert r.status_code == 404
    assert "not found" in r.json()["detail"]
