"""Dataset uploads against a real API process: upload, list, train from it, limits, delete."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import REPO, Service, free_port, running, service_env, wait_http_ok

LIMIT = 64 * 1024


def pets_csv(n: int = 120) -> bytes:
    rng = np.random.default_rng(0)
    labels = ["bird", "cat", "dog"]
    lines = ["a,b,c,kind"]
    lines += [
        ",".join(f"{v:.4f}" for v in rng.normal(size=3)) + f",{labels[i % 3]}" for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """The API alone (no worker needed to accept jobs), SQLite home, a small upload limit."""
    home = tmp_path / "home"
    env = service_env(
        TRAINRUN_HOME=str(home),
        TRAINRUN_LIMIT_MAX_DATASET_BYTES=str(LIMIT),
        TRAINRUN_LOG_LEVEL="WARNING",
    )
    subprocess.run(
        [sys.executable, "-m", "trainrun", "db", "upgrade"], env=env, cwd=REPO, check=True
    )
    port = free_port()
    service = Service(["api", "--port", str(port)], env, tmp_path / "api.log", cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    with running(service):
        wait_http_ok(f"{base}/healthz")
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, home / "data" / "uploads"


def table_job(dataset_id: str) -> dict[str, Any]:
    return {
        "name": "pets",
        "data": {"source": "table", "params": {"dataset_id": dataset_id, "target": "kind"}},
        "model": {"kind": "mlp", "hidden": [8]},
        "loss": {"kind": "cross_entropy"},
        "training": {"epochs": 1, "batch_size": 32},
    }


def test_upload_list_train_delete(api: tuple[httpx.Client, Path]) -> None:
    client, uploads = api
    body = pets_csv()
    r = client.post("/v1/datasets", files={"file": ("pets.csv", body)}, data={"name": "pets"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["name"] == "pets" and ds["format"] == "csv"
    assert ds["bytes"] == len(body) and ds["sha256"] == hashlib.sha256(body).hexdigest()
    assert ds["rows"] == 120 and ds["columns"] == ["a", "b", "c", "kind"]
    assert r.headers["location"] == f"/v1/datasets/{ds['id']}"
    assert (uploads / f"{ds['id']}.csv").read_bytes() == body

    listed = client.get("/v1/datasets").json()["data"]
    assert [d["id"] for d in listed] == [ds["id"]]
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds

    r = client.post("/v1/jobs", json=table_job(ds["id"]))
    assert r.status_code == 201, r.text

    bad = table_job(ds["id"])
    bad["data"]["params"]["target"] = "species"
    r = client.post("/v1/jobs", json=bad)
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "data", "params", "target"] and "'species'" in detail["msg"]

    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404
    assert list(uploads.iterdir()) == []


def test_upload_over_the_limit_is_413_and_leaves_nothing(api: tuple[httpx.Client, Path]) -> None:
    client, uploads = api
    big = pets_csv(4000)
    assert len(big) > LIMIT

    r = client.post("/v1/datasets", files={"file": ("big.csv", big)})
    assert r.status_code == 413, r.text

    # Chunked (no Content-Length): the limit is enforced while streaming.
    def chunks() -> Iterator[bytes]:
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        yield head
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]
        yield b"\r\n--b--\r\n"

    r = client.post(
        "/v1/datasets",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413, r.text
    assert list(uploads.iterdir()) == []
    assert client.get("/v1/datasets").json()["data"] == []


def test_a_file_that_does_not_open_is_422(api: tuple[httpx.Client, Path]) -> None:
    client, uploads = api
    r = client.post("/v1/datasets", files={"file": ("x.parquet", b"PAR1 but not really")})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "file"]
    r = client.post("/v1/datasets", data={"name": "no file"})
    assert r.status_code in (415, 422)
    assert list(uploads.iterdir()) == []
