"""With its database unreachable the API answers 503 with Retry-After, never a 500."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.support import Service, free_port, running, service_env, sine_spec, wait_http_ok

pytestmark = pytest.mark.e2e


def test_an_unreachable_database_gives_503_and_readyz_says_so(tmp_path: Path) -> None:
    missing = PG_ADMIN_URL.rsplit("/", 1)[0] + "/trainrun_no_such_database"
    env = service_env(TRAINRUN_DATABASE_URL=missing, TRAINRUN_HOME=str(tmp_path / "home"))
    port = free_port()
    api = Service(["api", "--port", str(port)], env, tmp_path / "api.log")
    with running(api):
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/healthz")  # the process is alive
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("error")
        for method, path, body in [
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", sine_spec()),
        ]:
            response = httpx.request(method, f"{base}{path}", json=body, timeout=30)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "2"
            assert "database" in response.json()["detail"]
    assert "Traceback" not in api.log()
