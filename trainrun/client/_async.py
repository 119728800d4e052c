"""The asynchronous client: the same surface as ``Client``, on ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator
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


class AsyncClient:
    """A trainrun service over HTTP, for asyncio code; see ``Client`` for the behaviour."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = _base.DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _base.resolve_url(base_url)
        self.retries = retries
        self.backoff = backoff
        self._timeout = _base.make_timeout(timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_base.default_headers(_base.resolve_token(token)),
            timeout=self._timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"{method} {self.base_url}{path}: {exc!r}") from exc
                await asyncio.sleep(self.backoff * 2**attempt)
                continue
            _base.raise_for_status(response)
            return response
        raise AssertionError("unreachable")

    # Jobs

    async def submit(self, spec: _base.SpecInput, idempotency_key: str | None = None) -> Job:
        body = _base.load_spec(spec)
        key = idempotency_key or _base.new_idempotency_key()
        response = await self._request(
            "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key}
        )
        return Job.model_validate(response.json())

    async def get(self, job_id: str) -> Job:
        return Job.model_validate((await self._request("GET", f"/v1/jobs/{job_id}")).json())

    async def list_page(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        response = await self._request("GET", "/v1/jobs", params=params)
        return JobPage.model_validate(response.json())

    async def list(self, status: str | None = None, page_size: int = 50) -> AsyncIterator[Job]:
        cursor: str | None = None
        while True:
            page = await self.list_page(status, page_size, cursor)
            for job in page.data:
                yield job
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        response = await self._request("POST", f"/v1/jobs/{job_id}/cancel")
        return Job.model_validate(response.json())

    async def wait(
        self, job_id: str, timeout: float | None = None, poll_interval: float = 1.0
    ) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            delay = poll_interval
            try:
                job = await self.get(job_id)
                if job.is_final:
                    return job
            except RateLimited as exc:
                delay = max(delay, exc.retry_after or 1.0)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"job {job_id} not final after {timeout}s")
                delay = min(delay, left)
            await asyncio.sleep(delay)

    # Sweeps

    async def submit_sweep(
        self, spec: _base.SpecInput, idempotency_key: str | None = None
    ) -> Sweep:
        """Submit a sweep spec (base + variations ...), as a mapping or a YAML/JSON file."""
        body = _base.load_spec(spec)
        key = idempotency_key or _base.new_idempotency_key()
        response = await self._request(
            "POST", "/v1/sweeps", json=body, headers={"Idempotency-Key": key}
        )
        return Sweep.model_validate(response.json())

    async def get_sweep(self, sweep_id: str) -> Sweep:
        response = await self._request("GET", f"/v1/sweeps/{sweep_id}")
        return Sweep.model_validate(response.json())

    async def list_sweeps(self, limit: int = 50, cursor: str | None = None) -> SweepPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await self._request("GET", "/v1/sweeps", params=params)
        return SweepPage.model_validate(response.json())

    async def cancel_sweep(self, sweep_id: str) -> Sweep:
        response = await self._request("POST", f"/v1/sweeps/{sweep_id}/cancel")
        return Sweep.model_validate(response.json())

    async def sweep_diagnosis(self, sweep_id: str) -> SweepDiagnosis:
        response = await self._request("GET", f"/v1/sweeps/{sweep_id}/diagnosis")
        return SweepDiagnosis.model_validate(response.json())

    # Live figures

    async def stream(
        self, job_id: str, last_epoch: int | None = None
    ) -> AsyncGenerator[EpochEvent, None]:
        state = _base.StreamState(last_epoch)
        timeout = _base.stream_timeout(self._timeout)
        path = f"/v1/jobs/{job_id}/events"
        while not state.ended:
            parser = SSEParser()
            try:
                headers = _base.events_headers(state.last_epoch)
                async with self._http.stream(
                    "GET", path, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _base.raise_for_status(response)
                    async for line in response.aiter_lines():
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
            await asyncio.sleep(state.dropped(reason, parser))

    # Figures and files

    async def curves(self, job_id: str, as_dataframe: bool = False, since_epoch: int = 0) -> Any:
        params = {"since_epoch": since_epoch} if since_epoch else None
        response = await self._request("GET", f"/v1/jobs/{job_id}/curves", params=params)
        curves = Curves.model_validate(response.json())
        return _base.to_dataframe(curves) if as_dataframe else curves

    async def curves_csv(self, job_id: str) -> str:
        return (await self._request("GET", f"/v1/jobs/{job_id}/curves.csv")).text

    async def curves_png(self, job_id: str) -> bytes:
        return (await self._request("GET", f"/v1/jobs/{job_id}/curves.png")).content

    async def diagnosis(self, job_id: str) -> Diagnosis:
        response = await self._request("GET", f"/v1/jobs/{job_id}/diagnosis")
        return Diagnosis.model_validate(response.json())

    async def download_model(self, job_id: str, path: str | os.PathLike[str] = ".") -> Path:
        target = Path(path)
        for attempt in range(self.retries + 1):
            try:
                async with self._http.stream("GET", f"/v1/jobs/{job_id}/model") as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _base.raise_for_status(response)
                    if target.is_dir():
                        target = target / _base.model_filename(response, job_id)
                    with _base.AtomicFile(target) as (fh, digest):
                        async for chunk in response.aiter_bytes():
                            fh.write(chunk)
                            digest.update(chunk)
                        _base.check_digest(response, digest)
                return target
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise ConnectionFailed(f"downloading job {job_id}'s model: {exc!r}") from exc
                await asyncio.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def load_model(self, job_id: str, device: str = "cpu") -> nn.Module:
        from trainrun.artifacts import load_model

        with tempfile.TemporaryDirectory(prefix="trainrun-model-") as tmp:
            path = await self.download_model(job_id, Path(tmp) / "model.safetensors")
            return await asyncio.to_thread(load_model, path, device)
