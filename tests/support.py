"""Test helpers: free ports, real service processes, polling, spec factories."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


class Service:
    """A ``trainrun`` subcommand running as a real process, its output in a log file."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trainrun", *args],
            env=dict(env),
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal_group(self, signum: int) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        self.signal_group(signal.SIGKILL)  # leftovers (pool children)
        self._log.close()
        return int(self.proc.returncode)


def service_env(base: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINRUN_")}
    env.update(base or {})
    env.update(overrides)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextmanager
def running(*services: Service) -> Iterator[None]:
    try:
        yield
    finally:
        for s in services:
            s.stop()


@contextmanager
def api_process(folder: Path, env: Mapping[str, str]) -> Iterator[str]:
    """``trainrun db upgrade``, then a real ``trainrun api`` on a free port; yields its URL."""
    subprocess.run(
        [sys.executable, "-m", "trainrun", "db", "upgrade"],
        env=dict(env), cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    api = Service(["api", "--port", str(port)], env, folder / "api.log", cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http_ok(f"{base}/healthz", timeout=60)
        except AssertionError:
            raise AssertionError(api.log()) from None
        yield base
    finally:
        api.stop()


def wait_http_ok(url: str, timeout: float = 60.0) -> None:
    wait_for(lambda: httpx.get(url, timeout=2).status_code == 200, timeout, 0.2, f"GET {url}")


def wait_job_final(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    final = {"succeeded", "failed", "cancelled", "timed_out"}

    def done() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in final else None

    return wait_for(done, timeout, 0.2, f"job {job_id} to end")


def sine_spec(epochs: int = 3, **overrides: Any) -> dict[str, Any]:
    """Seed 000's dropout network on the sine data (small and quick)."""
    spec: dict[str, Any] = {
        "name": "dropout-sine",
        "seed": 1,
        "data": {"source": "sine", "params": {"window": 150}, "split": {"train": 0.5, "val": 0.5}},
        "model": {
            "kind": "sequential",
            "layers": [
                {"conv1d": {"out_channels": 1, "kernel_size": 10}},
                "relu",
                {"dropout": 0.5},
                "flatten",
                {"linear": {"out_features": 2}},
                "hardsigmoid",
            ],
        },
        "loss": {"kind": "bce"},
        "optimizer": {"kind": "adam", "lr": 1e-3},
        "training": {"epochs": epochs, "batch_size": 256},
    }
    spec.update(overrides)
    return spec


def digits_spec(epochs: int = 3, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "digits-mlp",
        "seed": 0,
        "data": {"source": "digits", "standardize": True},
        "model": {"kind": "mlp", "hidden": [32]},
        "loss": {"kind": "cross_entropy"},
        "training": {"epochs": epochs, "batch_size": 128},
    }
    spec.update(overrides)
    return spec


def iris_spec(epochs: int = 1, **overrides: Any) -> dict[str, Any]:
    """A tiny MLP on iris (150 rows, 67 parameters): the cheapest job that trains for real."""
    spec = digits_spec(
        epochs=epochs,
        name="iris-mlp",
        data={"source": "iris", "standardize": True},
        model={"kind": "mlp", "hidden": [8]},
    )
    spec.update(overrides)
    return spec
