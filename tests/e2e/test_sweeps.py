"""Sweeps against a real API and a two-process worker (PostgreSQL + Redis): dropout rates on
the sine data, plain / BatchNorm / dropout on digits with seeds, median stopping (via the CLI),
cancelling, and invalid variants refused at submit."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import REDIS_URL, TABLES, settings_env
from tests.support import (
    Service,
    digits_spec,
    free_port,
    service_env,
    sine_spec,
    wait_for,
    wait_http_ok,
)
from trainrun.settings import Settings

pytestmark = pytest.mark.e2e
FINAL = {"succeeded", "failed", "cancelled", "partial"}


class Stack:
    def __init__(self, base: str, env: dict[str, str], worker: Service) -> None:
        self.base = base
        self.env = env
        self.worker = worker
        self.http = httpx.Client(base_url=base, timeout=30)

    def wait_sweep(self, sweep_id: str, timeout: float = 90.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            sweep = self.http.get(f"/v1/sweeps/{sweep_id}").json()
            return sweep if sweep["status"] in FINAL else None

        try:
            return wait_for(done, timeout, 0.3, f"sweep {sweep_id} to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.worker.log()[-3000:]}") from None


@pytest.fixture(scope="module")
def stack(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API and one worker with two processes for the module; tables emptied afterwards."""
    home = tmp_path_factory.mktemp("sweeps")
    settings = Settings(
        database_url=pg_url,
        broker_url=REDIS_URL,
        home=home / "home",
        queue_name=f"trainrun-test-{uuid.uuid4().hex[:10]}",
        reaper_interval_seconds=0.5,
    )
    env = service_env(settings_env(settings))
    port = free_port()
    api = Service(["api", "--port", str(port)], env, home / "api.log")
    worker = Service(["worker", "--concurrency", "2"], env, home / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz")
        stack = Stack(base, env, worker)
        yield stack
        stack.http.close()
    finally:
        api.stop()
        worker.stop()
        engine = create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{settings.queue_name}*"):
            r.delete(key)
        r.close()


def submit(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.http.post("/v1/sweeps", json=body)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/sweeps/{response.json()['id']}"
    return dict(response.json())


def test_dropout_rate_widens_the_train_mode_gap(stack: Stack) -> None:
    base = sine_spec(epochs=6)
    base["optimizer"]["lr"] = 1e-2
    created = submit(
        stack,
        {
            "name": "dropout-rates",
            "base": base,
            "variations": {"grid": {"model.layers[2].dropout": [0.0, 0.3, 0.6]}},
            "rank_by": {"metric": "val.accuracy"},
            "max_concurrent": 3,
        },
    )
    sweep = stack.wait_sweep(created["id"])
    assert sweep["status"] == "succeeded", sweep
    assert sweep["counts"]["succeeded"] == 3 and sweep["rank_by"]["maximize"] is True
    board = sweep["leaderboard"]
    assert [e["rank"] for e in board] == [1, 2, 3]
    means = [e["best"]["mean"] for e in board]
    assert means == sorted(means, reverse=True)
    for entry in board:
        (run,) = entry["runs"]
        assert run["state"] == "succeeded" and run["epoch"] == 6
        assert 1 <= run["best_epoch"] <= 6
        assert set(run["final"]) >= {"train", "train_eval", "val"}

    diagnosis = stack.http.get(f"/v1/sweeps/{created['id']}/diagnosis").json()
    summary = diagnosis["summary"]
    assert summary["parameter"] == "model.layers[2].dropout"
    assert summary["gap"] == "accuracy_gap"
    gaps = [point["accuracy_gap"] for point in summary["by_value"]]
    assert [p["value"] for p in summary["by_value"]] == [0.0, 0.3, 0.6]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0], summary
    assert summary["spearman"] > 0, summary
    assert "grows with model.layers[2].dropout" in summary["text"]

    compare = stack.http.get(f"/v1/sweeps/{created['id']}/compare").json()
    assert [j["id"] for j in compare["jobs"]] == [e["runs"][0]["job_id"] for e in board]
    assert sweep["compare_page"].startswith("/#/compare?ids=")
    listed = stack.http.get("/v1/sweeps").json()["data"]
    assert created["id"] in [s["id"] for s in listed]


def test_plain_batchnorm_dropout_on_digits_with_seeds(stack: Stack) -> None:
    created = submit(
        stack,
        {
            "name": "digits-layers",
            "base": digits_spec(epochs=3),
            "variations": {"list": [{}, {"model.batchnorm": True}, {"model.dropout": 0.3}]},
            "repeats": {"seeds": [0, 1]},
            "rank_by": {"metric": "val.accuracy", "mode": "max"},
            "max_concurrent": 2,
        },
    )
    assert created["runs_total"] == 6
    assert created["counts"]["queued"] == 2 and created["counts"]["pending"] == 4
    sweep = stack.wait_sweep(created["id"], timeout=120)
    assert sweep["status"] == "succeeded", sweep
    board = sweep["leaderboard"]
    assert sorted(e["variant"] for e in board) == [0, 1, 2]
    for entry in board:
        assert entry["seeds"] == [0, 1]
        assert entry["best"]["n"] == 2 and entry["best"]["std"] is not None
        assert entry["final"]["val"]["accuracy"]["n"] == 2

    # Never more than max_concurrent jobs at once: each run started after an earlier one ended.
    jobs = [stack.http.get(f"/v1/jobs/{r['job_id']}").json() for e in board for r in e["runs"]]
    events = sorted(
        [(j["started_at"], 1) for j in jobs] + [(j["finished_at"], -1) for j in jobs],
        key=lambda ev: (ev[0], ev[1]),
    )
    active = peak = 0
    for _, step in events:
        active += step
        peak = max(peak, active)
    assert peak <= 2

    diagnosis = stack.http.get(f"/v1/sweeps/{created['id']}/diagnosis").json()
    assert diagnosis["summary"]["spearman"] is None
    assert sorted(diagnosis["summary"]["swept"]) == ["model.batchnorm", "model.dropout"]
    assert [len(v["job_ids"]) for v in diagnosis["variants"]] == [2, 2, 2]


def test_median_rule_stops_a_bad_variant_early_via_the_cli(stack: Stack, tmp_path: Path) -> None:
    lrs = [1e-2, 8e-3, 1e-7]  # the last barely moves: worse than its peers from epoch 1 on
    base = sine_spec(epochs=30)
    base["training"]["batch_size"] = 64
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "name": "median-stop",
                "base": base,
                "variations": {"list": [{"optimizer.lr": lr} for lr in lrs]},
                "max_concurrent": 2,
                # Two peers: with one, of two good runs side by side the slower one would lose.
                "median_stopping": {"metric": "val.loss", "min_epochs": 2, "min_peers": 2},
            }
        )
    )
    cli = subprocess.run(
        [sys.executable, "-m", "trainrun", "--url", stack.base, "sweep", str(spec_file), "-f"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert cli.returncode == 0, (cli.stdout, cli.stderr)
    sweep_id = cli.stdout.splitlines()[0].strip()
    assert "stopped by median rule at epoch" in cli.stdout
    # Plain lines (not a terminal), one per change of a variant's state; which states a poll
    # catches depends on timing, so only the variant's line itself is checked.
    assert "\nv2  optimizer.lr=1e-07  " in cli.stdout

    sweep = stack.http.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded"
    assert sweep["counts"]["stopped"] == 1 and sweep["counts"]["succeeded"] == 2
    bad = next(e for e in sweep["leaderboard"] if e["variant"] == 2)
    (run,) = bad["runs"]
    assert run["state"] == "stopped" and run["epoch"] < 30, run
    assert run["stop_reason"].startswith("stopped by median rule at epoch ")
    assert "val.loss" in run["stop_reason"] and "worse than median" in run["stop_reason"]
    assert bad["rank"] == 3
    job = stack.http.get(f"/v1/jobs/{run['job_id']}").json()
    assert job["status"] == "cancelled" and job["epoch"] < job["epochs_total"]


def test_cancel_ends_waiting_and_running_variants(stack: Stack) -> None:
    created = submit(
        stack,
        {
            "name": "to-cancel",
            "base": sine_spec(epochs=200),
            "variations": {"grid": {"optimizer.lr": [1e-3, 2e-3, 3e-3]}},
            "max_concurrent": 1,
        },
    )
    first = created["leaderboard"][0]["runs"][0]["job_id"]
    wait_for(
        lambda: stack.http.get(f"/v1/jobs/{first}").json()["status"] == "running",
        60,
        0.2,
        "the first run to start",
    )
    cancelled = stack.http.post(f"/v1/sweeps/{created['id']}/cancel").json()
    assert cancelled["cancel_requested"] is True
    assert cancelled["counts"]["cancelled"] == 2  # the waiting runs, at once
    sweep = stack.wait_sweep(created["id"])
    assert sweep["status"] == "cancelled" and sweep["counts"]["cancelled"] == 3


def test_invalid_variants_are_refused_with_their_index_and_field(stack: Stack) -> None:
    before = stack.http.get("/v1/sweeps").json()["data"]
    jobs_before = stack.http.get("/v1/jobs").json()["data"]
    response = stack.http.post(
        "/v1/sweeps",
        json={
            "name": "bad",
            "base": sine_spec(),
            "variations": {"grid": {"model.layers[2].dropout.p": [0.1, 0.2, 0.3, 1.5]}},
        },
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "variants", 3, "model", "layers", 2, "dropout", "p"]
    assert "variant 3" in error["msg"] and "model.layers[2].dropout.p=1.5" in error["msg"]

    response = stack.http.post(
        "/v1/sweeps",
        json={"name": "bad", "base": sine_spec(), "variations": {"list": [{}, {"model.x": 1}]}},
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][:4] == ["body", "variants", 1, "model"]

    response = stack.http.post(
        "/v1/sweeps", json={"name": "bad", "base": sine_spec(), "variations": {"grid": {}}}
    )
    assert response.status_code == 422
    assert stack.http.get("/v1/sweeps").json()["data"] == before
    assert stack.http.get("/v1/jobs").json()["data"] == jobs_before
