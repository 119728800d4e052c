"""The client commands as a user runs them: ``trainrun submit/show/jobs/curves/watch/cancel``
as processes against a real ``trainrun serve`` with auth on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import service_env
from tests.trainrun.test_client import Server, start_server, tiny_spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("cli"))


def cli_env(server: Server) -> dict[str, str]:
    return service_env(TRAINRUN_URL=server.url, TRAINRUN_TOKEN=server.token)


def trainrun(
    server: Server, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainrun", *args],
        env=env or cli_env(server),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spec_file(tmp_path: Path, epochs: int, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(epochs=epochs, name=name)))
    return path


def test_submit_follow_then_show_jobs_curves(server: Server, tmp_path: Path) -> None:
    done = trainrun(server, "submit", str(spec_file(tmp_path, 3, "followed")), "--follow")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    job_id = lines[0]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    for line in epochs:
        for phase in ("train", "train_eval", "val"):
            assert f" {phase} loss=" in line and "acc=" in line, line
    assert lines[-1] == f"job {job_id} succeeded"

    show = trainrun(server, "show", job_id)
    assert show.returncode == 0 and "succeeded" in show.stdout and "3/3" in show.stdout
    # --url and --token as options instead of the environment, after the command.
    bare = service_env()
    show = trainrun(
        server, "show", job_id, "--json", "--url", server.url, "--token", server.token, env=bare
    )
    assert show.returncode == 0 and f'"id": "{job_id}"' in show.stdout

    jobs = trainrun(server, "jobs", "--status", "succeeded")
    assert jobs.returncode == 0 and job_id in jobs.stdout and "followed" in jobs.stdout

    csv = tmp_path / "curves.csv"
    curves = trainrun(server, "curves", job_id, "--csv", str(csv))
    assert curves.returncode == 0, curves.stderr
    header, *rows = csv.read_text().splitlines()
    assert "epoch" in header and len(rows) >= 3
    table = trainrun(server, "curves", job_id)
    assert table.returncode == 0 and "train_eval" in table.stdout

    diagnose = trainrun(server, "diagnose", job_id)
    assert diagnose.returncode == 0 and job_id in diagnose.stdout


def test_cancelled_job_exits_3(server: Server, tmp_path: Path) -> None:
    submitted = trainrun(server, "submit", str(spec_file(tmp_path, 200, "to-cancel")))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    cancelled = trainrun(server, "cancel", job_id)
    assert cancelled.returncode == 0 and job_id in cancelled.stdout
    watched = trainrun(server, "watch", job_id)
    assert watched.returncode == 3, watched.stderr
    assert watched.stdout.splitlines()[-1].startswith(f"job {job_id} cancelled")


def test_usage_errors_exit_2(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_spec(training={"epochs": 0}, extra_field=1)))
    rejected = trainrun(server, "submit", str(bad))
    assert rejected.returncode == 2
    assert "training.epochs" in rejected.stderr and "extra_field" in rejected.stderr

    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    for path in ("broken.yaml", "missing.yaml"):
        result = trainrun(server, "submit", str(tmp_path / path))
        assert result.returncode == 2 and "error:" in result.stderr, result.stderr
    assert trainrun(server, "curves").returncode == 2  # argparse: a missing argument

    unknown = trainrun(server, "show", "no-such-job")
    assert unknown.returncode == 1 and "404" in unknown.stderr
    anonymous = trainrun(server, "jobs", env=service_env(TRAINRUN_URL=server.url))
    assert anonymous.returncode == 1 and "401" in anonymous.stderr


def test_ctrl_c_while_following_detaches(server: Server, tmp_path: Path) -> None:
    # Enough epochs that the job is still running when the signal lands (a tiny epoch takes
    # a few milliseconds).
    epochs = 60
    spec = spec_file(tmp_path, epochs, "detached")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainrun", "submit", str(spec), "-f"],
        env=cli_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`cmd &`) passes SIGINT on
        # as ignored, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().strip()
        first = proc.stdout.readline()
        assert first.startswith(f"epoch 1/{epochs}"), first
        proc.send_signal(signal.SIGINT)
        out, errors = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, errors)
    assert f"trainrun watch {job_id}" in errors

    resumed = trainrun(server, "watch", job_id)  # the job went on without us
    assert resumed.returncode == 0, resumed.stderr
    seen = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch")]
    assert seen == [f"{e}/{epochs}" for e in range(1, epochs + 1)]


def test_follow_on_a_terminal_shows_a_progress_bar(server: Server, tmp_path: Path) -> None:
    import pty

    primary, secondary = pty.openpty()
    env = cli_env(server) | {"COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainrun", "submit", str(spec_file(tmp_path, 2, "tty")), "-f"],
        env=env,
        stdout=secondary,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    screen = b"".join(chunks).decode(errors="replace")
    assert "2/2" in screen and "val loss" in screen and "succeeded" in screen
    assert "epoch 1/2" not in screen  # the plain form is for pipes
