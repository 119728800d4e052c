"""The README's examples, run: each integration path's code block against a real service.

A fenced block takes part when an HTML comment (invisible on GitHub) on the line before its
fence names it, ``<!-- readme-test: NAME [ARG] -->``:

- ``http``, ``cli``, ``webhooks``: sh, run with ``bash -e -o pipefail``, the venv's ``bin``
  first on ``PATH`` (so ``trainrun`` is this checkout's);
- ``sdk``: python, run as a script with this interpreter (the venv's);
- ``webhook-verify``: python defining ``verify()``, checked on a real signed delivery;
- ``file NAME``: written to ``NAME`` in the working directory of every block (``spec.yaml``);
- ``compose``: cannot run here (no Docker engine), so every command it shows is checked
  instead: the services against ``docker-compose.yml``, the ``trainrun`` commands (through the
  image's ENTRYPOINT for ``docker compose run``) against the CLI's own parser.

The service is a real ``trainrun serve`` in a temporary directory, with auth on and a token
made by ``trainrun token create``. The blocks' placeholders are environment variables
(``$TRAINRUN_URL``, ``$TRAINRUN_TOKEN``, ``$HOOK_URL``), set here; no text is replaced.
"""

from __future__ import annotations

import email.message
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.test_compose import entrypoint, load_compose
from tests.support import (
    REPO,
    Service,
    free_port,
    iris_spec,
    running,
    service_env,
    wait_for,
    wait_http_ok,
)
from trainrun import cli_client
from trainrun.artifacts import load_model
from trainrun.cli import build_parser, cmd_token
from trainrun.client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

README = REPO / "README.md"
MARKER = re.compile(r"^<!-- readme-test: (?P<name>[\w-]+)(?: (?P<arg>\S+))? -->$")
FENCE = "```"
PATHS = {"http", "file", "sdk", "cli", "webhooks", "webhook-verify", "compose"}
BLOCK_TIMEOUT = 180
EPOCHS = 5  # the README's examples train this many


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # the opening fence's, 1-based
    name: str | None = None  # from the marker, if any
    arg: str | None = None


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, in order, with the marker on the line before it, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        if marker and not (i + 1 < len(lines) and lines[i + 1].startswith(FENCE)):
            raise AssertionError(f"README.md:{i + 1}: a readme-test marker must precede a fence")
        if not lines[i].startswith(FENCE):
            i += 1
            continue
        start, lang = i, lines[i].removeprefix(FENCE).strip()
        i += 1
        while i < len(lines) and lines[i] != FENCE:
            i += 1
        code = "\n".join(lines[start + 1 : i]) + "\n"
        prior = MARKER.match(lines[start - 1]) if start else None
        name, arg = (prior["name"], prior["arg"]) if prior else (None, None)
        blocks.append(Block(lang, code, start + 1, name, arg))
        i += 1
    return blocks


def marked(name: str) -> list[Block]:
    blocks = [b for b in readme_blocks(README.read_text()) if b.name == name]
    assert blocks, f"README.md has no block marked <!-- readme-test: {name} -->"
    return blocks


def script(name: str, lang: str) -> str:
    """The blocks marked ``name``, joined in README order (they share one shell)."""
    blocks = marked(name)
    for b in blocks:
        assert b.lang == lang, f"README.md:{b.line}: {name} block is {b.lang!r}, not {lang!r}"
    return "".join(b.code for b in blocks)


# --- the service ----------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    token: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``trainrun serve`` with auth on, and a token made as an operator makes one."""
    root = tmp_path_factory.mktemp("readme")
    env = service_env(
        TRAINRUN_HOME=str(root / "home"),
        TRAINRUN_AUTH_ENABLED="true",
        TRAINRUN_WEBHOOK_POLL_SECONDS="0.2",
    )
    port = free_port()
    service = Service(["serve", "--port", str(port)], env, root / "serve.log", cwd=root)
    with running(service):
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/readyz")  # migrated by now: tokens can be made
        made = subprocess.run(
            [sys.executable, "-m", "trainrun", "token", "create", "--owner", "readme"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        yield Server(url, made.stdout.strip())
        service.stop(timeout=5)


def block_env(server: Server, **extra: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = service_env({"TRAINRUN_URL": server.url, "TRAINRUN_TOKEN": server.token, **extra})
    env["PATH"] = venv_bin + ":" + env.get("PATH", "")
    return env


def run_block(
    name: str, lang: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Write the README's files into ``cwd``, then run the blocks marked ``name`` there."""
    for b in marked("file"):
        assert b.arg, f"README.md:{b.line}: a file block needs a name"
        (cwd / b.arg).write_text(b.code)
    path = cwd / f"readme-{name}.{'py' if lang == 'python' else 'sh'}"
    path.write_text(script(name, lang))
    argv = [sys.executable, str(path)] if lang == "python" else ["bash", "-e", "-o", "pipefail"]
    if lang == "sh":
        argv.append(str(path))
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    assert result.returncode == 0, (
        f"README {name} block exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"the README's example uses {tool}, which this machine lacks")


# --- the README's shape ---------------------------------------------------------------


def test_each_integration_path_has_a_marked_block() -> None:
    names = {b.name for b in readme_blocks(README.read_text()) if b.name}
    assert names == PATHS


def test_the_top_offers_exactly_two_commands() -> None:
    first, second, *_ = readme_blocks(README.read_text())
    assert (first.code, second.code) == ("scripts/serve\n", "scripts/test\n")


def test_exit_code_table_matches_the_cli() -> None:
    text = README.read_text()
    section = text[text.index("## CLI\n") : text.index("## Webhooks\n")]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert codes == {
        cli_client.EXIT_OK,
        cli_client.EXIT_FAILED,
        cli_client.EXIT_USAGE,
        cli_client.EXIT_CANCELLED,
        cli_client.EXIT_INTERRUPTED,
    }


# --- the runnable paths ---------------------------------------------------------------


def sse_events(stream: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each Server-Sent Event in ``curl -N``'s output."""
    events = []
    for chunk in stream.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_http(server: Server, tmp_path: Path) -> None:
    need("curl", "jq")
    result = run_block("http", "sh", tmp_path, block_env(server))

    events = sse_events(result.stdout)
    assert [e for e, _ in events] == ["epoch"] * EPOCHS + ["end"], result.stdout
    end = events[-1][1]
    assert end["status"] == "succeeded" and end["epoch"] == EPOCHS
    assert set(events[0][1]["phases"]) >= {"train", "train_eval", "val"}

    header, *rows = (tmp_path / "curves.csv").read_text().splitlines()
    assert header.startswith("epoch,phase,") and len(rows) >= 3 * EPOCHS
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    model = load_model(tmp_path / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_sdk(server: Server, tmp_path: Path) -> None:
    result = run_block("sdk", "python", tmp_path, block_env(server))
    lines = result.stdout.splitlines()
    epochs = [m[1] for line in lines if (m := re.match(r"epoch (\d+): train_eval acc ", line))]
    assert epochs == [str(e) for e in range(1, EPOCHS + 1)], result.stdout
    assert "succeeded" in lines, result.stdout  # the job's final status, printed alone
    assert "train_eval" in result.stdout  # a column of the DataFrame's pivot
    assert "tensor([[" in result.stdout  # the downloaded model ran on a window


def test_cli(server: Server, tmp_path: Path) -> None:
    result = run_block("cli", "sh", tmp_path, block_env(server))
    lines = result.stdout.splitlines()
    epochs = [line.split()[1] for line in lines if line.startswith("epoch ")]
    assert epochs == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)] * 2  # --follow, then watch
    finals = [line for line in lines if re.fullmatch(r"job \S+ succeeded", line)]
    assert len(finals) >= 2, result.stdout
    header = (tmp_path / "curves.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,phase,")
    assert re.search(r"^status: +succeeded$", result.stdout, re.M), result.stdout
    assert re.search(r"^job \S+ \(succeeded, epoch 5\)", result.stdout, re.M)  # diagnose


@dataclass(frozen=True)
class Delivery:
    headers: email.message.Message  # http.server's: case-insensitive, as a framework's are
    body: bytes


class Capture:
    """A loopback receiver that keeps every POST's headers and raw body, and answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                capture.deliveries.append(Delivery(self.headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/trainrun"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhooks(server: Server, tmp_path: Path) -> None:
    need("curl")
    capture = Capture()
    try:
        result = run_block("webhooks", "sh", tmp_path, block_env(server, HOOK_URL=capture.url))
        hook = json.loads(result.stdout)
        assert hook["url"] == capture.url and hook["secret"].startswith("whsec_")

        with Client(server.url, server.token) as client:
            job = client.submit(iris_spec(epochs=1))
            assert client.wait(job.id, timeout=120, poll_interval=0.2).status == "succeeded"

        def delivered() -> Delivery | None:
            for d in capture.deliveries:
                payload = json.loads(d.body)
                if payload["type"] == "job.succeeded" and payload["data"]["id"] == job.id:
                    return d
            return None

        delivery = wait_for(delivered, timeout=30, interval=0.2, what="the job.succeeded POST")
    finally:
        capture.close()

    namespace: dict[str, Any] = {}
    exec(compile(script("webhook-verify", "python"), "README.md:webhook-verify", "exec"), namespace)
    verify: Callable[[str, Any, bytes], bool] = namespace["verify"]
    secret, headers, body = hook["secret"], delivery.headers, delivery.body
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"succeeded", b"failed"))
    assert not verify("whsec_" + "A" * 44, headers, body)
    forged = email.message.Message()
    for key, value in headers.items():
        forged[key] = value
    forged.replace_header("webhook-id", "msg_forged")
    assert not verify(secret, forged, body)


# --- docker compose, checked without a Docker engine ----------------------------------


class Reset:
    """Compose's ``!reset`` tag: the attribute is removed from the merged file."""


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def commands(code: str) -> tuple[list[list[str]], dict[str, str]]:
    """The block's commands as argv lists, and the files its ``cat > FILE <<'EOF'`` write."""
    argvs: list[list[str]] = []
    files: dict[str, str] = {}
    lines = iter(code.splitlines())
    for line in lines:
        heredoc = re.fullmatch(r"cat > (\S+) <<'?(\w+)'?", line.strip())
        if heredoc:
            body = []
            for inner in lines:
                if inner == heredoc[2]:
                    break
                body.append(inner)
            files[heredoc[1]] = "\n".join(body) + "\n"
            continue
        argv = shlex.split(line, comments=True)
        if argv:
            argvs.append(argv)
    return argvs, files


def parse_cli(args: list[str]) -> Any:
    """Parse ``trainrun ARGS`` as the CLI would; fail the test where argparse would exit."""
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"`trainrun {shlex.join(args)}` is not a valid command") from None


def check_compose_command(argv: list[str], files: dict[str, str]) -> None:
    compose = load_compose()
    services = compose["services"]
    assert argv[:2] == ["docker", "compose"], argv
    rest = argv[2:]
    while rest[0] == "-f":
        name = rest[1]
        assert name in files or (REPO / name).is_file(), f"compose file {name} is neither here"
        rest = rest[2:]
    sub, *args = rest
    if sub == "up":
        assert set(args) <= {"-d", "--build"}, args
    elif sub == "run":
        assert args[0] == "--rm" and args[1] in services, args
        argv = entrypoint() + args[2:]  # the image's ENTRYPOINT, then the run's arguments
        assert argv[0] == "trainrun", argv
        parsed = parse_cli(argv[1:])
        if parsed.func is cmd_token:
            assert parsed.action == "create" and parsed.owner, argv
    elif sub == "logs":
        assert args[0] == "-f" and args[1] in services, args
    else:
        raise AssertionError(f"the README shows `docker compose {sub}`; add a check for it")


def test_compose_commands_exist() -> None:
    compose = load_compose()
    services = compose["services"]
    argvs, files = commands(script("compose", "sh"))
    for argv in argvs:
        if argv[0] == "docker":
            check_compose_command(argv, files)
        elif argv[0] == "export":
            env = dict(a.split("=", 1) for a in argv[1:])
            assert set(env) == {"TRAINRUN_URL", "TRAINRUN_TOKEN"}
            port = urlsplit(env["TRAINRUN_URL"]).port
            assert f"{port}:8000" in services["api"]["ports"]
        elif argv[0] == "trainrun":
            parse_cli(argv[1:])
        else:
            raise AssertionError(f"the README's compose block runs {argv[0]}; check it here")
    assert any(argv[:4] == ["docker", "compose", "run", "--rm"] for argv in argvs)
    assert "token" in {a for argv in argvs for a in argv}, "the block shows how to make a token"

    # The CPU-only override removes something the base file has: the GPU reservation.
    assert files, "the README shows a CPU-only override file"
    for name, text in files.items():
        override = yaml.load(text, Loader=ComposeLoader)  # a SafeLoader that knows !reset
        for service, attributes in override["services"].items():
            assert service in services, f"{name} overrides an unknown service {service}"
            for key, value in attributes.items():
                if isinstance(value, Reset):
                    assert key in services[service], f"{name} resets {service}.{key}: absent"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == (
        "nvidia"
    )
    assert "127.0.0.1:5555:5555" in services["flower"]["ports"]  # the README's Flower address
