"""Submitting specs to a real ``trainrun api`` process (SQLite, filesystem broker, no worker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import (
    api_process,
    digits_spec,
    service_env,
    sine_spec,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    home = tmp_path_factory.mktemp("api-home")
    env = service_env(TRAINRUN_HOME=str(home))
    assert "TRAINRUN_BROKER_URL" not in env and "TRAINRUN_DATABASE_URL" not in env
    with api_process(home, env) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c


def detail_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    return detail


def only_detail(response: httpx.Response) -> dict[str, Any]:
    detail = detail_of(response)
    assert len(detail) == 1, detail
    return detail[0]


def with_layer(index: int, layer: Any) -> dict[str, Any]:
    spec = sine_spec()
    spec["model"]["layers"][index] = layer
    return spec


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_openapi_has_readable_operation_ids(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    ops = {op["operationId"] for item in schema["paths"].values() for op in item.values()}
    assert {
        "jobs-create_job",
        "jobs-list_jobs",
        "jobs-get_job",
        "jobs-cancel_job",
        "health-healthz",
        "health-readyz",
    } <= ops
    assert schema["paths"]["/v1/jobs"]["post"]["operationId"] == "jobs-create_job"


@pytest.mark.parametrize(
    ("spec", "loc", "type_"),
    [
        (sine_spec(colour="red"), ["body", "colour"], "extra_forbidden"),
        (
            with_layer(2, {"dropout": {"p": 0.5, "rate": 0.1}}),
            ["body", "model", "layers", 2, "dropout", "rate"],
            "extra_forbidden",
        ),
        (
            with_layer(2, {"dropout": {"p": 1.5}}),
            ["body", "model", "layers", 2, "dropout", "p"],
            "less_than",
        ),
        (
            with_layer(2, {"dropout": 2}),
            ["body", "model", "layers", 2, "dropout", "p"],
            "less_than",
        ),
        (with_layer(1, "swish"), ["body", "model", "layers", 1], "unknown_layer"),
        (
            sine_spec(data={"source": "mnist"}),
            ["body", "data", "source"],
            "unknown_dataset",
        ),
        (sine_spec(loss={"kind": "nll"}), ["body", "loss", "kind"], "unknown_loss"),
        (
            sine_spec(training={"epochs": 0}),
            ["body", "training", "epochs"],
            "greater_than_equal",
        ),
    ],
    ids=[
        "unknown-top-field",
        "unknown-layer-param",
        "bad-layer-param",
        "bad-shorthand",
        "unknown-layer",
        "unknown-dataset",
        "unknown-loss",
        "epochs-zero",
    ],
)
def test_invalid_spec_is_422_with_the_exact_path(
    client: httpx.Client, spec: dict[str, Any], loc: list[Any], type_: str
) -> None:
    error = only_detail(client.post("/v1/jobs", json=spec))
    assert error["loc"] == loc
    assert error["type"] == type_


def test_unknown_dataset_message_lists_the_choices(client: httpx.Client) -> None:
    error = only_detail(client.post("/v1/jobs", json=sine_spec(data={"source": "mnist"})))
    for name in ("sine", "digits", "iris", "wine", "breast_cancer", "diabetes"):
        assert name in error["msg"]


@pytest.mark.parametrize(
    ("spec", "loc", "words"),
    [
        (
            with_layer(4, {"linear": 3}),
            ["body", "model"],
            "[2] or [1]",
        ),
        (
            with_layer(0, {"conv2d": {"out_channels": 1, "kernel_size": 3}}),
            ["body", "model", "layers", 0, "conv2d"],
            "rank 3",
        ),
        (
            digits_spec(data={"source": "diabetes"}, loss={"kind": "bce"}),
            ["body", "loss", "kind"],
            "regression",
        ),
        (
            digits_spec(model={"kind": "mlp", "hidden": [8], "out_features": 4}),
            ["body", "model"],
            "[10]",
        ),
    ],
    ids=["output-width", "layer-shape", "loss-task", "mlp-out-features"],
)
def test_dry_build_errors_are_422_spec_invalid(
    client: httpx.Client, spec: dict[str, Any], loc: list[Any], words: str
) -> None:
    error = only_detail(client.post("/v1/jobs", json=spec))
    assert error == {"type": "spec_invalid", "loc": loc, "msg": error["msg"]}
    assert words in error["msg"]


def test_rejected_specs_are_never_stored(client: httpx.Client) -> None:
    before = client.get("/v1/jobs", params={"limit": 500}).json()["data"]
    assert client.post("/v1/jobs", json=with_layer(4, {"linear": 3})).status_code == 422
    assert client.post("/v1/jobs", json=sine_spec(colour="red")).status_code == 422
    after = client.get("/v1/jobs", params={"limit": 500}).json()["data"]
    assert [j["id"] for j in after] == [j["id"] for j in before]


def test_valid_spec_is_queued_listed_and_cancellable(client: httpx.Client) -> None:
    created = client.post("/v1/jobs", json=sine_spec(epochs=4))
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["parameter_count"] == 295
    assert job["epochs_total"] == 4
    assert job["spec"]["optimizer"]["kind"] == "adam"
    assert job["spec"]["model"]["layers"][2] == {"dropout": {"p": 0.5}}

    fetched = client.get(created.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "queued"  # no worker is running
    assert fetched.json()["spec"] == job["spec"]

    listed = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert job["id"] in [j["id"] for j in listed]
    assert all(j["status"] == "queued" for j in listed)

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"

    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["data"]
    assert job["id"] not in [j["id"] for j in queued]
    ended = client.get("/v1/jobs", params={"status": "cancelled"}).json()["data"]
    assert job["id"] in [j["id"] for j in ended]


def test_list_rejects_an_unknown_status(client: httpx.Client) -> None:
    error = only_detail(client.get("/v1/jobs", params={"status": "sleeping"}))
    assert error["loc"] == ["query", "status"]


def test_unknown_job_is_404(client: httpx.Client) -> None:
    assert client.get(f"/v1/jobs/{'0' * 32}").status_code == 404
    assert client.post(f"/v1/jobs/{'0' * 32}/cancel").status_code == 404
