"""The SDK against a real service: ``trainrun serve`` (API + worker, SQLite) with auth on and a
token made by ``trainrun token create``; faults are injected with httpx transport wrappers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

from tests.support import Service, free_port, running, service_env, wait_http_ok
from trainrun.artifacts import load_model
from trainrun.client import (
    AsyncClient,
    Client,
    EpochEvent,
    NotFound,
    SpecFileError,
    TrainrunClientError,
    Unauthorized,
    ValidationFailed,
)
from trainrun.client.sse import SSEParser

pytestmark = pytest.mark.e2e
WINDOW = 20


def tiny_spec(epochs: int = 3, name: str = "tiny-sine", **overrides: Any) -> dict[str, Any]:
    """A small MLP on short sine windows: about a second an epoch."""
    spec: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "data": {
            "source": "sine",
            "params": {"window": WINDOW, "points": 400},
            "split": {"train": 0.5, "val": 0.5},
        },
        "model": {"kind": "mlp", "hidden": [8]},
        "loss": {"kind": "cross_entropy"},
        "training": {"epochs": epochs, "batch_size": 64},
    }
    spec.update(overrides)
    return spec


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    service: Service

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, self.token, **kwargs)


def start_server(root: Path) -> Iterator[Server]:
    """``trainrun serve`` with auth on, and a token for owner ``alice``."""
    env = service_env(TRAINRUN_HOME=str(root / "home"), TRAINRUN_AUTH_ENABLED="true")
    port = free_port()
    service = Service(["serve", "--port", str(port)], env, root / "serve.log", cwd=root)
    with running(service):
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/readyz")  # migrated by now: tokens can be made
        made = subprocess.run(
            [sys.executable, "-m", "trainrun", "token", "create", "--owner", "alice"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        yield Server(url, made.stdout.strip(), service)
        service.stop(timeout=5)  # no job worth draining is left


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("client"))


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with server.client() as c:
        yield c


# Fault injection


class DropFirstPostResponse(httpx.BaseTransport):
    """The server handles the first POST, but its response is lost on the way back."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.posts: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs":
            self.posts.append(request)
            if len(self.posts) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer (simulated)", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class CutAfterEvents(httpx.SyncByteStream):
    """Passes whole SSE blocks through, then fails like a dropped connection."""

    def __init__(self, response: httpx.Response, epochs: int) -> None:
        self.response, self.epochs = response, epochs

    def __iter__(self) -> Iterator[bytes]:
        buffer, seen = b"", 0
        for chunk in self.response.iter_raw():
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                yield block + b"\n\n"
                seen += b"event: epoch" in block
                if seen >= self.epochs:
                    self.response.close()
                    raise httpx.ReadError("connection dropped (simulated)")

    def close(self) -> None:
        self.response.close()


class DropFirstStream(httpx.BaseTransport):
    """The first event stream breaks after ``epochs`` epoch events; later ones run through."""

    def __init__(self, epochs: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.epochs = epochs
        self.last_event_ids: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) > 1:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=CutAfterEvents(response, self.epochs),
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


# Tests


def test_submit_wait_get_list_curves_and_model(client: Client, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_spec(epochs=3, name="lifecycle")))
    job = client.submit(spec_file)
    assert job.status == "queued" and job.name == "lifecycle" and job.owner == "alice"

    final = client.wait(job.id, timeout=60, poll_interval=0.2)
    assert (final.status, final.epoch, final.epochs_total) == ("succeeded", 3, 3)
    assert final.is_final and client.get(job.id) == final

    second = client.submit(tiny_spec(epochs=1, name="lifecycle-2"))
    client.cancel(second.id)
    listed = list(client.list(page_size=1))  # one job per page: follows next_cursor
    ids = [j.id for j in listed]
    assert ids.index(second.id) < ids.index(job.id) and len(set(ids)) == len(ids)
    assert job.id in {j.id for j in client.list(status="succeeded")}

    curves = client.curves(job.id)
    assert curves.epochs == [1, 2, 3] and curves.task == "classification"
    for phase in ("train", "train_eval", "val"):
        assert None not in curves.series[phase]["loss"]
    frame = client.curves(job.id, as_dataframe=True)
    assert len(frame[frame.phase == "val"]) == 3
    assert {"epoch", "phase", "loss", "accuracy"} <= set(frame.columns)

    path = client.download_model(job.id, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".safetensors"
    downloaded, fetched = load_model(path), client.load_model(job.id)
    x = torch.randn(5, 1, WINDOW, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = fetched(x)
        assert out.shape == (5, 2) and torch.isfinite(out).all()
        assert torch.equal(out, downloaded(x))
    assert not fetched.training

    diagnosis = client.diagnosis(job.id)
    assert diagnosis.job_id == job.id and diagnosis.epoch == 3 and diagnosis.summary


def test_same_idempotency_key_returns_the_same_job(client: Client) -> None:
    key = str(uuid.uuid4())
    first = client.submit(tiny_spec(epochs=50, name="idem"), idempotency_key=key)
    again = client.submit(tiny_spec(epochs=50, name="idem"), idempotency_key=key)
    client.cancel(first.id)
    assert again.id == first.id
    with pytest.raises(ValidationFailed):  # the same key with another spec
        client.submit(tiny_spec(epochs=51, name="idem"), idempotency_key=key)


def test_submit_retried_after_a_lost_response_makes_one_job(server: Server) -> None:
    transport = DropFirstPostResponse()
    name = f"retried-{uuid.uuid4().hex[:6]}"
    with server.client(transport=transport, backoff=0.05) as client:
        job = client.submit(tiny_spec(epochs=50, name=name))  # no key given: one is generated
        client.cancel(job.id)
        assert len(transport.posts) == 2
        keys = {r.headers["idempotency-key"] for r in transport.posts}
        assert len(keys) == 1 and uuid.UUID(keys.pop())
        assert [j.id for j in client.list() if j.name == name] == [job.id]


def test_stream_resumes_after_a_dropped_connection(server: Server) -> None:
    transport = DropFirstStream(epochs=2)
    with server.client(transport=transport) as client:
        job = client.submit(tiny_spec(epochs=4, name="streamed"))
        events = list(client.stream(job.id))
        assert [e.epoch for e in events] == [1, 2, 3, 4]
        assert transport.last_event_ids[:2] == [None, "2"]
        for event in events:
            assert {"train", "train_eval", "val"} <= set(event.phases)
            assert event.figure("val", "loss") is not None
        assert client.wait(job.id, timeout=30, poll_interval=0.2).status == "succeeded"

        # A caller that closes the stream itself resumes from the last epoch it saw.
        stream = client.stream(job.id)
        head = [next(stream).epoch, next(stream).epoch]
        stream.close()
        tail = [e.epoch for e in client.stream(job.id, last_epoch=head[-1])]
        assert head + tail == [1, 2, 3, 4]


def test_async_client_has_the_same_surface(server: Server) -> None:
    async def scenario() -> tuple[str, list[int], list[str], str]:
        async with AsyncClient(server.url, server.token) as client:
            job = await client.submit(tiny_spec(epochs=2, name="async"))
            epochs = [e.epoch async for e in client.stream(job.id)]
            final = await client.wait(job.id, timeout=30, poll_interval=0.2)
            ids = [j.id async for j in client.list(page_size=2)]
            curves = await client.curves(job.id)
            module = await client.load_model(job.id)
            assert module(torch.zeros(3, 1, WINDOW)).shape == (3, 2)
            with pytest.raises(NotFound):
                await client.get("no-such-job")
            return final.status, epochs, ids, str(curves.epochs)

    status, epochs, ids, curve_epochs = asyncio.run(scenario())
    assert (status, epochs, curve_epochs) == ("succeeded", [1, 2], "[1, 2]")
    assert len(ids) == len(set(ids)) >= 1


def test_invalid_spec_raises_validation_failed_with_paths(client: Client, tmp_path: Path) -> None:
    bad = tiny_spec(training={"epochs": 0, "batch_size": 64}, surprise=1)
    with pytest.raises(ValidationFailed) as caught:
        client.submit(bad)
    assert caught.value.status_code == 422
    assert {"training.epochs", "surprise"} <= set(caught.value.paths)
    assert all(e["loc"][0] == "body" for e in caught.value.errors)

    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(SpecFileError, match="mapping"):
        client.submit(tmp_path / "list.json")
    with pytest.raises(SpecFileError, match="cannot read"):
        client.submit(tmp_path / "missing.yaml")


def test_auth_errors(server: Server) -> None:
    for token in ("", "trn_not-a-real-token"):
        with Client(server.url, token) as anonymous, pytest.raises(Unauthorized) as caught:
            anonymous.get("anything")
        assert caught.value.status_code == 401
    with server.client() as client, pytest.raises(NotFound):
        client.get("no-such-job")


def test_cancel_a_running_job(client: Client) -> None:
    job = client.submit(tiny_spec(epochs=200, name="cancelled"))
    stream = client.stream(job.id)
    assert next(stream).epoch == 1  # running now
    stream.close()
    assert client.cancel(job.id).cancel_requested
    assert client.wait(job.id, timeout=30, poll_interval=0.2).status == "cancelled"


# Pure units


def test_sse_parser_handles_comments_multiline_data_and_ids() -> None:
    parser = SSEParser()
    lines = [": keep-alive", "", "event: epoch", "id: 3", "data: {", 'data: "epoch": 3}', ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert len(events) == 1 and events[0].id == "3"
    epoch = EpochEvent.from_sse(events[0])
    assert epoch.epoch == 3 and epoch.phases == {}
    assert parser.feed("event: end") is None and parser.feed("data: succeeded") is None
    end = parser.feed("")
    assert end is not None and (end.event, end.data, end.id) == ("end", "succeeded", "3")


def test_dataframe_without_pandas_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainrun.client import _base
    from trainrun.client._models import Curves

    monkeypatch.setitem(sys.modules, "pandas", None)
    curves = Curves(job_id="j", status="queued", task="", epochs=[], series={})
    with pytest.raises(TrainrunClientError, match="needs pandas"):
        _base.to_dataframe(curves)
