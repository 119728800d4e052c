"""Curves as JSON (downsampled honestly), CSV, PNG/SVG, comparisons and the live event stream,
against real ``trainrun api`` processes: SQLite with figures written as a worker writes them,
and PostgreSQL + Redis with a real ``trainrun worker`` for the live stream."""

from __future__ import annotations

import math
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import settings_env
from tests.sse import Event, stream
from tests.support import (
    Service,
    api_process,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_http_ok,
)
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import JobStatus
from trainrun.settings import Settings

N = 1000  # samples behind each figure
PHASES = ("train", "train_eval", "val")
FAST_STREAM = {"TRAINRUN_EVENTS_POLL_SECONDS": "0.1", "TRAINRUN_EVENTS_KEEPALIVE_SECONDS": "0.3"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """One API process for the module on a migrated SQLite home; tests write figures directly."""
    tmp = tmp_path_factory.mktemp("curves")
    home = tmp / "home"
    env = service_env(FAST_STREAM, TRAINRUN_HOME=str(home), TRAINRUN_LOG_LEVEL="WARNING")
    with api_process(tmp, env) as base, httpx.Client(base_url=base, timeout=30) as c:
        yield c, home


@pytest.fixture
def client(service: tuple[httpx.Client, Path]) -> httpx.Client:
    return service[0]


@pytest.fixture
def home(service: tuple[httpx.Client, Path]) -> Path:
    return service[1]


def figures(loss: float, accuracy: float, penalty: float = 0.0) -> dict[str, Any]:
    return {
        "n": N,
        "loss_sum": loss * N,
        "penalty": penalty,
        "correct": accuracy * N,
        "ties": 0,
        "seconds": 0.01,
    }


def epoch_figures(epoch: int, spike_at: int = -1) -> dict[str, dict[str, Any]]:
    """A smooth run, wobbling a little, with one val spike (a downsampler must keep it)."""
    base = 1.0 / math.sqrt(epoch) + 0.01 * math.sin(epoch)
    spike = 10.0 if epoch == spike_at else 0.0
    return {
        "train": figures(base + 0.1, min(1.0, 0.5 + epoch / 4000)),
        "train_eval": figures(base, min(1.0, 0.55 + epoch / 4000)),
        "val": figures(base + 0.05 + spike, min(1.0, 0.52 + epoch / 4000)),
    }


class Writer:
    """Writes figures the way a worker does: claim, then one ``record_epoch`` per epoch."""

    def __init__(self, home: Path, epochs_total: int, name: str = "curves") -> None:
        self.engine = make_engine(Settings(home=home))
        self.factory = make_sessionmaker(self.engine)
        raw = sine_spec(epochs=epochs_total, name=name)
        with transaction(self.factory) as s:
            job = queries.create_job(
                s, name=name, spec=raw, owner="anonymous", epochs_total=epochs_total,
                parameter_count=1,
            )  # fmt: skip
            self.job_id = job.id
        with transaction(self.factory) as s:
            token = queries.claim_job(s, self.job_id, "test-worker", 600.0, 3)
        assert token is not None
        self.token = token

    def record(self, epochs: range, spike_at: int = -1) -> None:
        with transaction(self.factory) as s:  # one transaction: fast for long runs
            for epoch in epochs:
                figs = epoch_figures(epoch, spike_at)
                queries.record_epoch(s, self.job_id, self.token, epoch, figs, 600.0)

    def finish(self, test_epoch: int) -> None:
        with transaction(self.factory) as s:
            test = {"test": figures(0.3, 0.9)}
            queries.record_epoch(s, self.job_id, self.token, test_epoch, test, 600.0)
        with transaction(self.factory) as s:
            queries.finish_job(s, self.job_id, self.token, JobStatus.succeeded)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def writer_factory(home: Path) -> Iterator[Any]:
    made: list[Writer] = []

    def make(epochs_total: int, name: str = "curves") -> Writer:
        made.append(Writer(home, epochs_total, name))
        return made[-1]

    yield make
    for w in made:
        w.close()


def test_curves_json_full_and_since_epoch(client: httpx.Client, writer_factory: Any) -> None:
    w = writer_factory(10)
    w.record(range(1, 6))
    body = client.get(f"/v1/jobs/{w.job_id}/curves").json()
    assert body["job_id"] == w.job_id and body["status"] == "running"
    assert body["task"] == "classification" and body["sampling"] is None
    assert body["epochs"] == [1, 2, 3, 4, 5]
    assert list(body["series"]) == list(PHASES)
    assert body["series"]["val"]["loss"][0] == pytest.approx(
        epoch_figures(1)["val"]["loss_sum"] / N
    )
    assert set(body["series"]["train"]) == {"loss", "accuracy", "tie_rate", "penalty"}
    later = client.get(f"/v1/jobs/{w.job_id}/curves", params={"since_epoch": 3}).json()
    assert later["epochs"] == [4, 5]


def test_max_points_keeps_an_envelope(client: httpx.Client, writer_factory: Any) -> None:
    epochs, spike = 500, 321
    w = writer_factory(epochs)
    w.record(range(1, epochs + 1), spike_at=spike)
    full = client.get(f"/v1/jobs/{w.job_id}/curves").json()
    assert len(full["epochs"]) == epochs

    r = client.get(f"/v1/jobs/{w.job_id}/curves", params={"max_points": 50})
    assert r.status_code == 200, r.text
    sampled = r.json()
    kept = sampled["epochs"]
    assert 2 < len(kept) <= 50 and kept == sorted(kept)
    assert kept[0] == 1 and kept[-1] == epochs and spike in kept
    how = sampled["sampling"]
    assert how["method"] == "minmax" and how["epochs_total"] == epochs
    assert how["points"] == len(kept) and how["buckets"] >= 3
    index = {e: i for i, e in enumerate(full["epochs"])}
    for phase, metrics in sampled["series"].items():
        for metric, values in metrics.items():
            whole = full["series"][phase][metric]
            # every kept value is the stored one at that epoch (no averaging) ...
            assert values == [whole[index[e]] for e in kept], (phase, metric)
            # ... and the extremes survive
            assert min(values) == min(whole) and max(values) == max(whole), (phase, metric)
    # each bucket's own min and max survive too (the envelope, not only the global extremes)
    size = -(-epochs // how["buckets"])
    whole = full["series"]["train"]["loss"]
    values = dict(zip(kept, sampled["series"]["train"]["loss"], strict=True))
    for start in range(0, epochs, size):
        bucket = whole[start : start + size]
        inside = [v for e, v in values.items() if start < e <= start + size]
        assert min(bucket) in inside and max(bucket) in inside

    few = client.get(f"/v1/jobs/{w.job_id}/curves", params={"max_points": 5000}).json()
    assert few["sampling"] is None and len(few["epochs"]) == epochs
    assert client.get(f"/v1/jobs/{w.job_id}/curves", params={"max_points": 1}).status_code == 422


def test_csv_is_full_fidelity(client: httpx.Client, writer_factory: Any) -> None:
    w = writer_factory(300)
    w.record(range(1, 301))
    w.finish(test_epoch=250)
    r = client.get(f"/v1/jobs/{w.job_id}/curves.csv", params={"max_points": 10})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["epoch", "phase", "attempt", "n"]
    assert header[-3:] == ["loss", "accuracy", "tie_rate"] and header.count("penalty") == 1
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert len(rows) == 300 * len(PHASES) + 1  # every epoch and phase, plus the test row
    first = rows[0]
    assert first["epoch"] == "1" and first["phase"] == "train" and first["sse"] == ""
    assert float(first["loss"]) == pytest.approx(float(first["loss_sum"]) / N)
    assert [r["phase"] for r in rows if r["epoch"] == "250"] == [
        "test",
        "train",
        "train_eval",
        "val",
    ]


def test_png_and_svg(client: httpx.Client, writer_factory: Any) -> None:
    w = writer_factory(50)
    w.record(range(1, 51))
    w.finish(test_epoch=40)
    png = client.get(f"/v1/jobs/{w.job_id}/curves.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 20_000
    svg = client.get(f"/v1/jobs/{w.job_id}/curves.svg", params={"phases": "train,val"})
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg")
    bad = client.get(f"/v1/jobs/{w.job_id}/curves.png", params={"metric": "bogus"})
    assert bad.status_code == 422 and "bogus" in bad.json()["detail"][0]["msg"]


def test_etag_and_not_modified(client: httpx.Client, writer_factory: Any) -> None:
    w = writer_factory(10)
    w.record(range(1, 3))
    for path in ("curves", "curves.csv", "curves.png"):
        url = f"/v1/jobs/{w.job_id}/{path}"
        first = client.get(url)
        etag = first.headers["etag"]
        assert first.status_code == 200 and "no-cache" in first.headers["cache-control"]
        again = client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    json_etag = client.get(f"/v1/jobs/{w.job_id}/curves").headers["etag"]
    w.record(range(3, 4))  # a new epoch changes the tag
    fresh = client.get(f"/v1/jobs/{w.job_id}/curves", headers={"If-None-Match": json_etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != json_etag
    assert fresh.json()["epochs"] == [1, 2, 3]


def test_compare(client: httpx.Client, writer_factory: Any) -> None:
    a, b = writer_factory(10, "plain"), writer_factory(10, "dropout")
    a.record(range(1, 6))
    b.record(range(1, 4))
    ids = f"{a.job_id},{b.job_id}"
    r = client.get("/v1/compare", params={"ids": ids, "metric": "loss", "phases": "val"})
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    assert [j["id"] for j in jobs] == [a.job_id, b.job_id]
    assert [j["name"] for j in jobs] == ["plain", "dropout"]
    assert [j["epochs"] for j in jobs] == [[1, 2, 3, 4, 5], [1, 2, 3]]
    assert all(j["status"] == "running" for j in jobs)
    assert jobs[0]["series"] == {"val": {"loss": pytest.approx(
        [epoch_figures(e)["val"]["loss_sum"] / N for e in range(1, 6)]
    )}}  # fmt: skip
    png = client.get("/v1/compare", params={"ids": ids, "format": "png", "phases": "train,val"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    svg = client.get("/v1/compare", params={"ids": ids, "format": "svg"})
    assert ET.fromstring(svg.content).tag.endswith("svg")

    eleven = ",".join([a.job_id] + [f"{i:032x}" for i in range(10)])
    too_many = client.get("/v1/compare", params={"ids": eleven})
    assert too_many.status_code == 422 and "at most 10" in r.text + too_many.text
    unknown = "f" * 32
    missing = client.get("/v1/compare", params={"ids": f"{a.job_id},{unknown}"})
    assert missing.status_code == 404 and unknown in missing.json()["detail"]


def _epochs(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.event == "epoch" and e.id is not None]


def test_events_stream_a_running_job(client: httpx.Client, writer_factory: Any) -> None:
    w = writer_factory(6)
    w.record(range(1, 3))

    def train() -> None:  # the rest arrives while the client listens
        for epoch in range(3, 7):
            time.sleep(0.25)
            w.record(range(epoch, epoch + 1))
        time.sleep(0.5)  # quiet long enough for a keep-alive
        w.finish(test_epoch=5)

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        events = list(stream(client, f"/v1/jobs/{w.job_id}/events"))
    finally:
        trainer.join()
    assert _epochs(events) == [1, 2, 3, 4, 5, 6]
    first = next(e for e in events if e.event == "epoch").json()
    assert first["epoch"] == 1 and list(first["phases"]) == list(PHASES)
    assert first["phases"]["val"]["loss"] == pytest.approx(epoch_figures(1)["val"]["loss_sum"] / N)
    assert any("keep-alive" in c for e in events for c in e.comments)
    end = events[-1]
    assert end.event == "end"
    assert end.json()["status"] == "succeeded" and end.json()["epoch"] == 6
    assert end.json()["test"]["epoch"] == 5 and end.json()["test"]["accuracy"] == pytest.approx(0.9)

    resumed = list(stream(client, f"/v1/jobs/{w.job_id}/events", last_event_id="4"))
    assert _epochs(resumed) == [5, 6] and resumed[-1].event == "end"
    by_query = list(stream(client, f"/v1/jobs/{w.job_id}/events?last_event_id=6"))
    assert _epochs(by_query) == [] and [e.event for e in by_query] == ["end"]
    assert client.get(f"/v1/jobs/{'0' * 32}/events").status_code == 404


@pytest.mark.e2e
def test_live_events_from_a_real_worker(pg_settings: Settings, tmp_path: Path) -> None:
    """PostgreSQL, Redis, ``trainrun api`` and ``trainrun worker`` as separate processes."""
    env = service_env(settings_env(pg_settings), **FAST_STREAM)
    port = free_port()
    api = Service(["api", "--port", str(port)], env, tmp_path / "api.log")
    worker = Service(["worker"], env, tmp_path / "worker.log")
    with running(api, worker):
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/v1/jobs", json=sine_spec(epochs=5))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            events = list(stream(client, f"/v1/jobs/{job_id}/events", timeout=60))
            assert _epochs(events) == [1, 2, 3, 4, 5], (events, worker.log())
            assert events[-1].event == "end" and events[-1].json()["status"] == "succeeded"
            first = next(e for e in events if e.event == "epoch").json()
            assert set(first["phases"]) >= {"train", "train_eval", "val"}

            resumed = list(stream(client, f"/v1/jobs/{job_id}/events", last_event_id="3"))
            assert _epochs(resumed) == [4, 5] and resumed[-1].event == "end"

            curves = client.get(f"/v1/jobs/{job_id}/curves")
            assert curves.json()["epochs"] == [1, 2, 3, 4, 5]
            assert "max-age" in curves.headers["cache-control"]  # an ended job's figures stay
            etag = curves.headers["etag"]
            cached = client.get(f"/v1/jobs/{job_id}/curves", headers={"If-None-Match": etag})
            assert cached.status_code == 304
            compared = client.get("/v1/compare", params={"ids": job_id, "format": "png"})
            assert compared.status_code == 200 and compared.content.startswith(b"\x89PNG")
