"""Embedded mode as a user runs it: ``trainrun serve`` in a fresh directory, no configuration
at all (state under ``./var``), stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    Service,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_for,
    wait_http_ok,
    wait_job_final,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
EXIT_TIMEOUT = 30


def worker_pids(cwd: Path) -> set[int]:
    """Live processes running ``trainrun worker`` (parent and pool children) in ``cwd``."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            in_cwd = os.readlink(entry / "cwd") == str(cwd)
        except OSError:  # gone, a zombie, or not ours to read
            continue
        if in_cwd and b"trainrun" in cmdline and b"worker" in cmdline:
            pids.add(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already exited


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def serve(project: Path, logs: Path, name: str) -> tuple[Service, str]:
    """``trainrun serve`` with the user's environment minus any TRAINRUN_* variable."""
    port = free_port()
    env = service_env()
    assert not any(k.startswith("TRAINRUN_") for k in env)
    service = Service(["serve", "--port", str(port)], env, logs / f"{name}.log", cwd=project)
    return service, f"http://127.0.0.1:{port}"


def ctrl_c(service: Service, project: Path) -> None:
    """SIGINT to the serve process alone; it must exit 0 and leave no worker behind."""
    workers = wait_for(lambda: worker_pids(project), 30, 0.1, "the embedded worker")
    groups = {os.getpgid(pid) for pid in workers}
    assert service.proc.pid not in groups  # the worker runs in a process group of its own
    service.proc.send_signal(signal.SIGINT)
    code = service.proc.wait(timeout=EXIT_TIMEOUT)
    assert code == 0, service.log()
    wait_for(
        lambda: (
            not any(alive(p) for p in workers)
            and all(group_gone(g) for g in groups)
            and not worker_pids(project)
        ),
        5,
        0.1,
        f"worker processes {workers} to exit",
    )


def read_job(db: Path, job_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute(
            "SELECT status, attempt, worker, lease_expires_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return dict(row)
    finally:
        conn.close()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    project, logs = tmp_path / "project", tmp_path / "logs"
    project.mkdir()
    logs.mkdir()
    return project, logs


def test_serve_trains_a_job_and_stops_cleanly_on_ctrl_c(dirs: tuple[Path, Path]) -> None:
    project, logs = dirs
    service, base = serve(project, logs, "serve")
    with running(service), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        created = client.post("/v1/jobs", json=sine_spec(epochs=5))
        assert created.status_code == 201, created.text
        job = wait_job_final(client, created.json()["id"], timeout=60)
        assert job["status"] == "succeeded", (job, service.log())
        assert (job["attempt"], job["epoch"]) == (1, 5)

        curves = client.get(f"/v1/jobs/{job['id']}/curves").json()
        assert curves["epochs"] == [1, 2, 3, 4, 5]
        for phase in ("train", "train_eval", "val"):
            for metric in ("loss", "accuracy"):
                values = curves["series"][phase][metric]
                assert len(values) == 5 and None not in values, (phase, metric)

        db = project / "var" / "trainrun.db"
        assert db.is_file()
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()

        ctrl_c(service, project)


def test_ctrl_c_hands_a_running_job_back_and_the_next_serve_finishes_it(
    dirs: tuple[Path, Path],
) -> None:
    project, logs = dirs
    epochs = 10  # long enough to interrupt after epoch 1, short enough to finish
    first, base = serve(project, logs, "serve-1")
    with running(first), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        created = client.post("/v1/jobs", json=sine_spec(epochs=epochs))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def training() -> bool:
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] in {"queued", "running"}, job
            return bool(job["status"] == "running" and job["epoch"] >= 1)

        wait_for(training, 60, 0.05, "the job to train an epoch")
        ctrl_c(first, project)

    stored = read_job(project / "var" / "trainrun.db", job_id)
    assert stored == {"status": "queued", "attempt": 0, "worker": None, "lease_expires_at": None}

    second, base = serve(project, logs, "serve-2")
    with running(second), httpx.Client(base_url=base, timeout=10) as client:
        wait_http_ok(f"{base}/readyz")
        job = wait_job_final(client, job_id, timeout=120)
        assert job["status"] == "succeeded", (job, second.log())
        assert (job["attempt"], job["epoch"]) == (1, epochs)
        assert client.get(f"/v1/jobs/{job_id}/curves").json()["epochs"] == list(
            range(1, epochs + 1)
        )
        ctrl_c(second, project)
