"""docker-compose.yml, checked without a Docker engine: its structure, then each trainrun
service started natively with the command and environment the file gives it.

The native run maps the containers onto this machine: the image's ENTRYPOINT plus a service's
``command`` become ``python -m trainrun ...``; the ``postgres`` and ``redis`` hostnames become
the local test servers (the fresh test database, a private queue); a named volume becomes a
directory under ``tmp_path`` shared by every service that mounts it.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.support import (
    REPO,
    Service,
    free_port,
    running,
    service_env,
    sine_spec,
    wait_for,
    wait_job_final,
)
from trainrun.settings import Settings

pytestmark = pytest.mark.e2e

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
BACKBONE = ("redis", "postgres", "migrate", "api", "worker")
AFTER_MIGRATIONS = {
    "redis": "service_healthy",
    "postgres": "service_healthy",
    "migrate": "service_completed_successfully",
}
# Compose's ${NAME}, ${NAME:-default} and ${NAME-default}.
VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def load_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return compose


def interpolate(value: str) -> str:
    """Compose's variable substitution, with the file's defaults (not this machine's env)."""
    return VARIABLE.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form) from the Dockerfile."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT ")]
    assert len(lines) == 1, "the Dockerfile needs one ENTRYPOINT"
    argv: list[str] = json.loads(lines[0].removeprefix("ENTRYPOINT "))
    return argv


def service_argv(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return entrypoint() + args


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {
        k: interpolate(str(v).lower() if isinstance(v, bool) else str(v)) for k, v in raw.items()
    }


def named_mounts(service: dict[str, Any], compose: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume, for the service's named-volume mounts."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        if source in (compose.get("volumes") or {}):
            mounts[target] = source
    return mounts


def healthcheck_code(service: dict[str, Any]) -> str:
    """The Python source of a ``["CMD", "python", "-c", code]`` healthcheck."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code: str = test[3]
    return code


# --- the file's structure ---------------------------------------------------------------


def test_backbone_services_are_declared_and_each_has_a_healthcheck() -> None:
    services = load_compose()["services"]
    assert set(BACKBONE) <= set(services)
    for name, service in services.items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


def test_trainrun_services_run_the_trainrun_image_with_their_commands() -> None:
    services = load_compose()["services"]
    assert entrypoint() == ["trainrun"]
    assert service_argv(services["migrate"]) == ["trainrun", "db", "upgrade"]
    assert service_argv(services["worker"]) == ["trainrun", "worker", "--concurrency", "1"]
    api = service_argv(services["api"])
    assert api[:2] == ["trainrun", "api"]
    port = api[api.index("--port") + 1]
    assert api[api.index("--host") + 1] == "0.0.0.0"
    assert any(str(p).endswith(f":{port}") for p in services["api"]["ports"])
    assert f"127.0.0.1:{port}/readyz" in healthcheck_code(services["api"])
    images = {services[name]["image"] for name in ("migrate", "api", "worker")}
    assert len(images) == 1, "api, worker and migrate share one image"
    dockerfile = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert re.search(r"^USER (?!root\b)\S+", dockerfile, re.M), "the image runs as non-root"


def test_services_start_after_their_dependencies() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker", "reaper"):
        if name not in services:
            continue
        depends = {k: v["condition"] for k, v in services[name]["depends_on"].items()}
        assert depends == AFTER_MIGRATIONS, name


def test_urls_name_the_service_hostnames() -> None:
    services = load_compose()["services"]
    for name in ("migrate", "api", "worker"):
        env = service_environment(services[name])
        db = make_url(env["TRAINRUN_DATABASE_URL"])
        assert (db.drivername, db.host, db.port) == ("postgresql+psycopg", "postgres", 5432)
        pg_env = service_environment(services["postgres"])
        assert (db.username, db.password, db.database) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            pg_env["POSTGRES_DB"],
        )
        broker = urlsplit(env["TRAINRUN_BROKER_URL"])
        assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert service_environment(services["api"])["TRAINRUN_AUTH_ENABLED"] == "true"


def test_worker_reserves_one_nvidia_gpu() -> None:
    worker = load_compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service_environment(worker)["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.parametrize(
    ("variable", "volume"), [("ARTIFACT_DIR", "artifacts"), ("DATA_DIR", "data")]
)
def test_api_and_worker_share_a_volume_for(variable: str, volume: str) -> None:
    compose = load_compose()
    services = compose["services"]
    assert {"pgdata", volume} <= set(compose["volumes"])
    assert named_mounts(services["postgres"], compose) == {"/var/lib/postgresql/data": "pgdata"}
    shared = set()
    for name in ("api", "worker"):
        folder = service_environment(services[name])[f"TRAINRUN_{variable}"]
        shared.add(named_mounts(services[name], compose)[folder])
    assert shared == {volume}


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


# --- the services, run natively ---------------------------------------------------------


class NativeHost:
    """Maps compose services onto this machine's test PostgreSQL, Redis and ``tmp_path``."""

    def __init__(self, compose: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
        self.compose = compose
        self.settings = settings
        self.tmp_path = tmp_path
        self.api_port = free_port()

    def database_url(self, url: str) -> str:
        """``postgres:5432`` as the compose user -> the test server, as its user, fresh DB."""
        compose_url, local = make_url(url), make_url(self.settings.database_url)
        assert compose_url.host in self.compose["services"], compose_url.host
        native = compose_url.set(
            host=local.host,
            port=local.port,
            username=local.username,
            password=local.password,
            database=local.database,
        )
        return native.render_as_string(hide_password=False)

    def broker_url(self, url: str) -> str:
        """``redis://redis:6379/0`` -> the test Redis."""
        compose_url, local = urlsplit(url), urlsplit(self.settings.broker_url)
        assert compose_url.hostname in self.compose["services"], compose_url.hostname
        return urlunsplit(compose_url._replace(netloc=local.netloc, path=local.path))

    def path(self, name: str, value: str) -> str:
        """A named volume -> a directory shared by its services; else container-private."""
        container_path = PurePosixPath(value)
        for target, volume in named_mounts(self.compose["services"][name], self.compose).items():
            if container_path.is_relative_to(target):
                rel = container_path.relative_to(target)
                return str(self.tmp_path / "volumes" / volume / rel)
        return str(self.tmp_path / "containers" / name / container_path.relative_to("/"))

    def env(self, name: str) -> dict[str, str]:
        env = service_environment(self.compose["services"][name])
        for key, value in env.items():
            if key == "TRAINRUN_DATABASE_URL":
                env[key] = self.database_url(value)
            elif key == "TRAINRUN_BROKER_URL":
                env[key] = self.broker_url(value)
            elif key.endswith("_DIR") or key == "TRAINRUN_HOME":
                env[key] = self.path(name, value)
        # TRAINRUN_AUTH_ENABLED stays as the file sets it: the run below makes a token first,
        # as an operator does with `docker compose run --rm api token create ...`.
        env.setdefault("TRAINRUN_HOME", self.path(name, "/var/lib/trainrun"))  # the image's ENV
        env["TRAINRUN_QUEUE_NAME"] = self.settings.queue_name  # not the shared default queue
        return service_env(env)

    def args(self, name: str) -> list[str]:
        """``trainrun ARGS`` -> ARGS for ``python -m trainrun``; the API on a free local port."""
        argv = service_argv(self.compose["services"][name])
        assert argv[0] == "trainrun", argv
        args = argv[1:]
        if "--host" in args:
            args[args.index("--host") + 1] = "127.0.0.1"
        if "--port" in args:
            args[args.index("--port") + 1] = str(self.api_port)
        return args

    def service(self, name: str) -> Service:
        return Service(self.args(name), self.env(name), self.tmp_path / f"{name}.log")

    def healthy(self, name: str) -> bool:
        """Run the service's Python healthcheck here, the API's URL pointed at the local port."""
        code = healthcheck_code(self.compose["services"][name])
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.api_port}")
        result = subprocess.run(
            [sys.executable, "-c", code], env=self.env(name), capture_output=True, timeout=15
        )
        return result.returncode == 0


def test_compose_services_run_natively_and_train_a_job(
    pg_settings: Settings, tmp_path: Path
) -> None:
    host = NativeHost(load_compose(), pg_settings, tmp_path)

    migrate = host.service("migrate")
    migrate.proc.wait(timeout=60)
    assert migrate.stop() == 0, migrate.log()
    assert "database at upgrade" in migrate.log()
    assert host.healthy("migrate")

    made = subprocess.run(
        [sys.executable, "-m", "trainrun", "token", "create", "--owner", "compose-test"],
        env=host.env("api"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    names = [n for n in ("api", "worker", "reaper") if n in host.compose["services"]]
    services = {name: host.service(name) for name in names}
    with running(*services.values()):
        for name in names:
            wait_for(partial(host.healthy, name), timeout=45, interval=0.5, what=f"{name} healthy")
        base = f"http://127.0.0.1:{host.api_port}"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/jobs", timeout=10).status_code == 401  # auth is on
        with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
            created = client.post("/v1/jobs", json=sine_spec(epochs=3))
            assert created.status_code == 201, created.text
            job = wait_job_final(client, created.json()["id"], timeout=60)
            assert job["status"] == "succeeded", (job, services["worker"].log())
            assert job["epoch"] == job["epochs_total"] == 3

            curves = client.get(f"/v1/jobs/{job['id']}/curves").json()
            assert curves["epochs"] == [1, 2, 3]
            for phase in ("train", "train_eval", "val"):
                for metric in ("loss", "accuracy"):
                    values = curves["series"][phase][metric]
                    assert len(values) == 3 and None not in values, (phase, metric, values)

    # api and worker were handed the same directories for the shared volumes
    for variable in ("TRAINRUN_ARTIFACT_DIR", "TRAINRUN_DATA_DIR"):
        assert host.env("api")[variable] == host.env("worker")[variable]
