"""What the sync and async clients share: configuration, spec loading, errors, stream state."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from trainrun.client._errors import (
    ConnectionFailed,
    SpecFileError,
    TrainrunClientError,
    error_for,
)
from trainrun.client._models import Curves, EpochEvent, end_status
from trainrun.client.sse import ServerSentEvent, SSEParser

if TYPE_CHECKING:
    import pandas

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0  # the service sends keep-alives well within this
RECONNECT_DELAY = 0.5
MAX_RECONNECTS = 5  # in a row without a new event
MAX_RECONNECT_DELAY = 5.0

SpecInput = Mapping[str, Any] | str | os.PathLike[str]


def resolve_url(base_url: str | None) -> str:
    return (base_url or os.environ.get("TRAINRUN_URL") or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    return token or os.environ.get("TRAINRUN_TOKEN") or None


def default_headers(token: str | None) -> dict[str, str]:
    from trainrun import __version__

    headers = {"User-Agent": f"trainrun-client/{__version__}", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout)


def stream_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    """The call's timeouts, with a read timeout long enough to span keep-alive gaps."""
    read = max(timeout.read or 0.0, STREAM_READ_TIMEOUT)
    return httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def load_spec(spec: SpecInput) -> dict[str, Any]:
    """A spec given as a mapping, or as the path to a YAML or JSON file."""
    if isinstance(spec, Mapping):
        return dict(spec)
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecFileError(f"cannot read spec file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecFileError(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"{path} must hold a mapping (the job spec), not {type(data).__name__}")
    return data


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def raise_for_status(response: httpx.Response) -> None:
    """Turn an error status into its typed exception (the body must already be read)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    headers = {k.lower(): v for k, v in response.headers.items()}
    raise error_for(response.status_code, detail, headers)


def model_filename(response: httpx.Response, job_id: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    name = Path(match.group(1)).name if match else ""
    return name or f"{job_id}.safetensors"


def events_headers(last_epoch: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_epoch is not None:
        headers["Last-Event-ID"] = str(last_epoch)
    return headers


class StreamState:
    """Where a job's event stream stands: the last epoch seen, and whether it has ended."""

    def __init__(self, last_epoch: int | None) -> None:
        self.last_epoch = last_epoch
        self.status: str | None = None
        self.ended = False
        self.failures = 0  # reconnects in a row without a new event
        self.retry_delay = RECONNECT_DELAY

    def handle(self, event: ServerSentEvent) -> EpochEvent | None:
        """An epoch event not seen before, or None (the end, a repeat, another event)."""
        if event.event == "end":
            self.ended, self.status = True, end_status(event)
            return None
        if event.event != "epoch":
            return None
        epoch = EpochEvent.from_sse(event)
        if self.last_epoch is not None and epoch.epoch <= self.last_epoch:
            return None  # a replay after a reconnect: already delivered
        self.last_epoch, self.failures = epoch.epoch, 0
        return epoch

    def dropped(self, reason: str, parser: SSEParser) -> float:
        """Count a dropped connection; the delay before reconnecting, or raise if hopeless."""
        if parser.retry is not None:  # the server's ``retry:`` field, in ms
            self.retry_delay = min(parser.retry / 1000, MAX_RECONNECT_DELAY)
        self.failures += 1
        if self.failures > MAX_RECONNECTS:
            raise ConnectionFailed(f"event stream kept dropping ({reason}); gave up")
        return self.retry_delay * min(self.failures, 4)


def to_dataframe(curves: Curves) -> pandas.DataFrame:
    try:
        import pandas
    except ImportError:
        raise TrainrunClientError(
            "curves(as_dataframe=True) needs pandas: pip install 'trainrun[sdk]' (or pandas)"
        ) from None
    metrics = dict.fromkeys(m for s in curves.series.values() for m in s)  # ordered, unique
    columns = ["epoch", "phase", *metrics]
    return pandas.DataFrame(curves.rows(), columns=columns)


class AtomicFile:
    """Write to a temporary file beside ``target``; rename over it only on success."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        self.tmp = Path(tmp)
        self.fh = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()

    def __enter__(self) -> tuple[Any, Any]:
        return self.fh, self.digest

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.fh.close()
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)


def check_digest(response: httpx.Response, digest: Any) -> None:
    expected = response.headers.get("x-trainrun-sha256")
    if expected and digest.hexdigest() != expected:
        # A transport-level error, so the download is retried like a dropped connection.
        raise httpx.ReadError("model download corrupted (SHA-256)", request=response.request)
