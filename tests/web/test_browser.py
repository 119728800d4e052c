"""The web UI in a real browser: Debian's Chromium driven by Playwright against a real
``trainrun serve`` (embedded: SQLite, one real worker) running in a temporary directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    Service,
    digits_spec,
    free_port,
    service_env,
    sine_spec,
    wait_http_ok,
    wait_job_final,
)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000  # the first job waits for the worker to import torch


def ensure_chromium() -> str | None:
    """Install Debian's chromium if it is missing; the reason it is unavailable, or None."""
    if CHROMIUM.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return "/usr/bin/chromium is missing and cannot be installed (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"could not install chromium ({' '.join(cmd[1:])}): {done.stderr[-500:]}"
    return None if CHROMIUM.exists() else "apt-get installed chromium but not /usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``trainrun serve`` in a fresh directory, no configuration (state under ./var)."""
    project = tmp_path_factory.mktemp("web-project")
    port = free_port()
    service = Service(
        ["serve", "--port", str(port)], service_env(), project / "serve.log", cwd=project
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/healthz", timeout=90)
        yield url
    finally:
        code = service.stop()
        assert code in (0, -15), service.log()


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


@pytest.fixture
def page(browser: Any, base_url: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context; page errors fail the test (console errors are logged)."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    yield pg
    pg.screenshot(path=str(tmp_path / "final.png"), full_page=True)
    (tmp_path / "console.log").write_text("\n".join(console))
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def submit_job(client: httpx.Client, spec: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_submit_form_lands_on_job_page(page: Any, client: httpx.Client, tmp_path: Path) -> None:
    page.goto("/#/submit")
    spec = sine_spec(epochs=3, name="from-the-form")
    page.fill("#spec-input", json.dumps(spec, indent=2))
    page.screenshot(path=str(tmp_path / "submit-filled.png"), full_page=True)
    page.click("#submit-spec")

    page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    sync_api.expect(page.locator(".job-title h1")).to_have_text("from-the-form")
    sync_api.expect(page.locator(".job-id")).to_have_text(job_id)
    assert client.get(f"/v1/jobs/{job_id}").json()["name"] == "from-the-form"
    # the page follows the job to its end without a reload
    sync_api.expect(page.locator(".job-title .badge").first).to_have_text("succeeded")
    sync_api.expect(page.locator("#charts")).to_have_attribute("data-epochs", "3")
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)


def test_job_page_draws_epochs_as_they_arrive(
    page: Any, client: httpx.Client, tmp_path: Path
) -> None:
    epochs = 60
    job_id = submit_job(client, sine_spec(epochs=epochs, name="live-curves"))
    page.goto(f"/#/jobs/{job_id}")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    charts = page.locator("#charts")

    seen: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        value = int(charts.get_attribute("data-epochs") or 0)
        if not seen or value != seen[-1]:
            seen.append(value)
            if len(seen) == 3:
                page.screenshot(path=str(tmp_path / "job-midway.png"), full_page=True)
        if value >= epochs:
            break
        time.sleep(0.1)

    assert seen[-1] == epochs, f"the chart stopped at {seen}"
    assert seen == sorted(seen), seen
    assert len([v for v in seen if 0 < v < epochs]) >= 2, f"no growth observed: {seen}"
    assert page.evaluate("window.__sameDocument") is True
    loss = page.locator('.chart-card[data-metric="loss"]')
    sync_api.expect(loss).to_have_attribute("data-epochs", str(epochs))
    assert page.locator(".live-state").get_attribute("data-state") in ("live", "ended")
    sync_api.expect(page.locator(".live-state")).to_have_attribute("data-state", "ended")
    sync_api.expect(page.locator(".diagnosis .summary")).to_contain_text("epochs")
    page.screenshot(path=str(tmp_path / "job-done.png"), full_page=True)


def test_compare_page_shows_both_jobs(page: Any, client: httpx.Client, tmp_path: Path) -> None:
    ids = [
        submit_job(client, sine_spec(epochs=3, name="compare-sine")),
        submit_job(client, digits_spec(epochs=3, name="compare-digits")),
    ]
    for job_id in ids:
        assert wait_job_final(client, job_id)["status"] == "succeeded"

    page.goto(f"/#/compare?ids={','.join(ids)}")
    items = page.locator(".job-legend li")
    sync_api.expect(items).to_have_count(2)
    for job_id, name in zip(ids, ("compare-sine", "compare-digits"), strict=True):
        sync_api.expect(page.locator(f'.job-legend li[data-id="{job_id}"]')).to_contain_text(name)
    loss = page.locator('#compare-charts .chart-card[data-metric="loss"]')
    sync_api.expect(loss).to_have_attribute("data-epochs", "3")
    train = page.locator('input[name="phase"][value="train"]')
    assert not train.is_checked()
    train.check()
    assert train.is_checked()
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_invalid_spec_is_marked_at_its_field(
    page: Any, client: httpx.Client, tmp_path: Path
) -> None:
    before = len(client.get("/v1/jobs").json()["data"])
    yaml_text = "\n".join(
        [
            "name: bad-dropout",
            "seed: 1",
            "data: {source: sine, params: {window: 150}, split: {train: 0.5, val: 0.5}}",
            "model:",
            "  kind: sequential",
            "  layers:",
            "    - {conv1d: {out_channels: 1, kernel_size: 10}}",
            "    - relu",
            "    - dropout: {p: -0.5}",
            "    - flatten",
            "    - {linear: {out_features: 2}}",
            "    - hardsigmoid",
            "loss: {kind: bce}",
            "training: {epochs: 2, batch_size: 256}",
        ]
    )
    page.goto("/#/submit")
    page.fill("#spec-input", yaml_text)
    page.click("#submit-spec")

    path = "model.layers[2].dropout.p"
    problem = page.locator(f'.problem[data-path="{path}"]')
    sync_api.expect(problem).to_contain_text("greater than or equal to 0")
    sync_api.expect(problem).to_contain_text("line 9")  # the `p: -0.5` line, 1-based
    marked = page.locator(".backdrop .bl.bad")
    sync_api.expect(marked).to_have_count(1)
    sync_api.expect(marked).to_have_attribute("data-line", "9")
    sync_api.expect(marked.locator(".inline-msg")).to_contain_text(path)
    sync_api.expect(page.locator(".gutter .ln.bad")).to_have_text("9")
    page.screenshot(path=str(tmp_path / "submit-invalid.png"), full_page=True)

    assert "#/submit" in page.url
    assert len(client.get("/v1/jobs").json()["data"]) == before  # nothing was queued
