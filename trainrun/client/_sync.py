"""The synchronous client."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from trainrun.client import _base
from trainrun.client._errors import ConnectionFailed, RateLimited, WaitTimeout
from trainrun.client._models import Curves, Diagnosis, EpochEvent, Job, JobPage
from trainrun.client._sweep_models import Sweep, SweepDiagnosis, SweepPage
from trainrun.client.sse import SSEParser

if TYPE_CHECKING:
    from torch import nn


class Client:
    """A trainrun service over HTTP.

    ``base_url`` and ``token`` default to ``$TRAINRUN_URL`` and ``$TRAINRUN_TOKEN``. Transport
    errors (connection refused or reset, timeouts) are retried ``retries`` times; a submit is
    retried with the same Idempotency-Key, so a retry never makes a second job.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = _base.DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = _base.resolve_url(base_url)
        self.retries = retries
        self.backoff = backoff
        self._timeout = _base.make_timeout(timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_base.default_headers(_base.resolve_token(token)),
            timeout=self._timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {self.base_url}{path}: {exc!r}") from exc
                time.sleep(self.backoff * 2**attempt)
                continue
            _base.raise_for_status(response)
            return response
        raise AssertionError("unreachable")

    # Jobs

    def submit(self, spec: _base.SpecInput, idempotency_key: str | None = None) -> Job:
        """Submit a spec (a mapping, or a YAML/JSON file's path).

        With an ``idempotency_key`` used before (same spec), the earlier job is returned.
        """
        body = _base.load_spec(spec)
        key = idempotency_key or _base.new_idempotency_key()
        response = self._request("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        return Job.model_validate(response.json())

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def list_page(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def list(self, status: str | None = None, page_size: int = 50) -> Iterator[Job]:
        """Every job, newest first, fetching pages as the iteration goes."""
        cursor: str | None = None
        while True:
            page = self.list_page(status, page_size, cursor)
            yield from page.data
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def wait(self, job_id: str, timeout: float | None = None, poll_interval: float = 1.0) -> Job:
        """Poll until the job is final; raise ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            delay = poll_interval
            try:
                job = self.get(job_id)
                if job.is_final:
                    return job
            except RateLimited as exc:
                delay = max(delay, exc.retry_after or 1.0)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} not final after {timeout}s")
                delay = min(delay, left)
            time.sleep(delay)

    # Sweeps

    def submit_sweep(self, spec: _base.SpecInput, idempotency_key: str | None = None) -> Sweep:
        """Submit a sweep spec (base + variations ...), as a mapping or a YAML/JSON file."""
        body = _base.load_spec(spec)
        key = idempotency_key or _base.new_idempotency_key()
        response = self._request("POST", "/v1/sweeps", json=body, headers={"Idempotency-Key": key})
        return Sweep.model_validate(response.json())

    def get_sweep(self, sweep_id: str) -> Sweep:
        response = self._request("GET", f"/v1/sweeps/{sweep_id}")
        return Sweep.model_validate(response.json())

    def list_sweeps(self, limit: int = 50, cursor: str | None = None) -> SweepPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = self._request("GET", "/v1/sweeps", params=params)
        return SweepPage.model_validate(response.json())

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        response = self._request("POST", f"/v1/sweeps/{sweep_id}/cancel")
        return Sweep.model_validate(response.json())

    def sweep_diagnosis(self, sweep_id: str) -> SweepDiagnosis:
        response = self._request("GET", f"/v1/sweeps/{sweep_id}/diagnosis")
        return SweepDiagnosis.model_validate(response.json())

    # Live figures

    def stream(
        self, job_id: str, last_epoch: int | None = None
    ) -> Generator[EpochEvent, None, None]:
        """Each epoch's figures as they are stored, after ``last_epoch``; ends with the job.

        A dropped connection is resumed with ``Last-Event-ID``: no epoch is missed or repeated.
        """
        state = _base.StreamState(last_epoch)
        timeout = _base.stream_timeout(self._timeout)
        path = f"/v1/jobs/{job_id}/events"
        while not state.ended:
            parser = SSEParser()
            try:
                headers = _base.events_headers(state.last_epoch)
                with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.status_code >= 400:
                        response.read()
                        _base.raise_for_status(response)
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        epoch = state.handle(event)
                        if epoch is not None:
                            yield epoch
                        if state.ended:
                            return
                reason = "closed before the end event"
            except httpx.TransportError as exc:
                reason = repr(exc)
            time.sleep(state.dropped(reason, parser))

    # Figures and files

    def curves(self, job_id: str, as_dataframe: bool = False, since_epoch: int = 0) -> Any:
        """Columnar curves (``Curves``), or a pandas DataFrame (one row per epoch and phase)."""
        params = {"since_epoch": since_epoch} if since_epoch else None
        curves = Curves.model_validate(
            self._request("GET", f"/v1/jobs/{job_id}/curves", params=params).json()
        )
        return _base.to_dataframe(curves) if as_dataframe else curves

    def curves_csv(self, job_id: str) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/curves.csv").text

    def curves_png(self, job_id: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{job_id}/curves.png").content

    def diagnosis(self, job_id: str) -> Diagnosis:
        return Diagnosis.model_validate(self._request("GET", f"/v1/jobs/{job_id}/diagnosis").json())

    def download_model(self, job_id: str, path: str | os.PathLike[str] = ".") -> Path:
        """Save the model file to ``path`` (a file, or a directory for the served name)."""
        target = Path(path)
        for attempt in range(self.retries + 1):
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/model") as response:
                    if response.status_code >= 400:
                        response.read()
                        _base.raise_for_status(response)
                    if target.is_dir():
                        target = target / _base.model_filename(response, job_id)
                    with _base.AtomicFile(target) as (fh, digest):
                        for chunk in response.iter_bytes():
                            fh.write(chunk)
                            digest.update(chunk)
                        _base.check_digest(response, digest)
                return target
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"downloading job {job_id}'s model: {exc!r}") from exc
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def load_model(self, job_id: str, device: str = "cpu") -> nn.Module:
        """Download the model and rebuild the torch module from it (eval mode)."""
        from trainrun.artifacts import load_model

        with tempfile.TemporaryDirectory(prefix="trainrun-model-") as tmp:
            path = self.download_model(job_id, Path(tmp) / "model.safetensors")
            return load_model(path, device)
