"""Schema-driven fuzzing (schemathesis + hypothesis) of a real ``trainrun api`` process.

Every operation in the OpenAPI document gets a bounded budget of generated requests, valid
and invalid, with a real bearer token; half of the ``job_id``s point at real jobs (one
finished with figures, one queued) so the success paths are fuzzed too, not only the 404s.
Checks: no 5xx, every status code declared, every body matching its declared schema and
content type. There is no worker: an accepted job just stays queued.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi import checks as openapi_checks

from api.main import create_app
from tests.support import REPO, Service, free_port, iris_spec, service_env, wait_http_ok
from trainrun.db import queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.db.tables import JobStatus
from trainrun.db.tokens import create_token
from trainrun.settings import Settings

pytestmark = pytest.mark.e2e

# The budget is bounded by examples, not by a clock (about a minute for the module here).
MAX_EXAMPLES = 25  # per operation
CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]
# The live stream of a queued job stays open (up to 10 minutes): only the finished job's
# stream, which ends at once, is fuzzed.
STREAMING = {"GET /v1/jobs/{job_id}/events"}
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in create_app(Settings()).openapi()["paths"].items()
    for method in item
)


@dataclass
class Target:
    schema: Any  # schemathesis' OpenApiSchema
    base: str
    token: str
    finished_job: str  # succeeded, with three epochs of figures and a test row
    queued_job: str


def _seed(settings: Settings) -> tuple[str, str, str]:
    """An admin token, a finished job with figures and a queued job, written as a worker would."""
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    try:
        with transaction(factory) as s:
            token = create_token(s, "fuzzer", admin=True)
            spec = iris_spec(epochs=3)
            finished = queries.create_job(
                s, name="fuzz-finished", spec=spec, owner="fuzzer", epochs_total=3,
                parameter_count=67,
            ).id  # fmt: skip
            queued = queries.create_job(
                s, name="fuzz-queued", spec=spec, owner="fuzzer", epochs_total=3,
                parameter_count=67,
            ).id  # fmt: skip
        with transaction(factory) as s:
            fence = queries.claim_job(s, finished, "fuzz-worker", 600.0, 3)
            assert fence is not None
            for epoch in (1, 2, 3):
                stats = {"n": 100, "loss_sum": 50.0 / epoch, "penalty": 0.0, "correct": 60 + epoch}
                figures = {p: dict(stats, ties=0, seconds=0.01) for p in ("train", "train_eval")}
                figures["val"] = dict(stats, ties=1, seconds=0.01)
                queries.record_epoch(s, finished, fence, epoch, figures, 600.0)
            test = {"test": {"n": 30, "loss_sum": 9.0, "penalty": 0.0, "correct": 25, "ties": 0}}
            queries.record_epoch(s, finished, fence, 3, test, 600.0)
            queries.finish_job(s, finished, fence, JobStatus.succeeded)
    finally:
        engine.dispose()
    return token, finished, queued


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    home = tmp_path_factory.mktemp("fuzz")
    env = service_env(
        TRAINRUN_HOME=str(home),
        TRAINRUN_AUTH_ENABLED="true",
        TRAINRUN_LOG_LEVEL="WARNING",
        TRAINRUN_LIMIT_REQUESTS_PER_MINUTE="1000000",
        TRAINRUN_LIMIT_REQUEST_BURST="1000000",
        TRAINRUN_LIMIT_MAX_BODY_BYTES="100000",
        TRAINRUN_LIMIT_MAX_DATASET_BYTES="100000",
        TRAINRUN_EVENTS_POLL_SECONDS="0.05",
    )
    subprocess.run(
        [sys.executable, "-m", "trainrun", "db", "upgrade"],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    token, finished, queued = _seed(Settings(home=home))
    port = free_port()
    api = Service(["api", "--port", str(port)], env, home / "api.log", cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http_ok(f"{base}/healthz", timeout=60)
        except AssertionError:
            raise AssertionError(api.log()) from None
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        yield Target(schema, base, token, finished, queued)
        assert "Traceback" not in api.log(), api.log()[-5000:]
    finally:
        api.stop()


def _find(schema: Any, label: str) -> Any:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served schema"
    return operation


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_survives_fuzzing(target: Target, label: str) -> None:
    operation = _find(target.schema, label)
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    real_jobs = [target.finished_job] if label in STREAMING else [
        target.finished_job, target.queued_job
    ]  # fmt: skip
    failures: list[str] = []
    session = requests.Session()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        path = case.path_parameters or {}
        if "job_id" in path and (label in STREAMING or data.draw(st.booleans())):
            path["job_id"] = data.draw(st.sampled_from(real_jobs))
        if label == "GET /v1/compare" and data.draw(st.booleans()):
            case.query = dict(case.query or {}, ids=f"{target.finished_job},{target.queued_job}")
        response = case.call(
            base_url=target.base,
            session=session,
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=30,
        )
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseException as exc:  # FailureGroup is a BaseExceptionGroup: collect them all
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc}")

    run()
    session.close()
    assert not failures, "\n\n".join(dict.fromkeys(failures))


def test_the_served_schema_is_the_one_fuzzed(target: Target) -> None:
    served = httpx.get(f"{target.base}/openapi.json").json()
    labels = sorted(f"{m.upper()} {p}" for p, item in served["paths"].items() for m in item)
    assert labels == OPERATIONS
