"""Shared fixtures: a fresh PostgreSQL database per test session (built by running the
migrations), per-test table cleanup, a private Redis queue name, settings for each backend.

Service addresses come from env vars with this machine's defaults:
``TRAINRUN_TEST_PG`` (an admin URL) and ``TRAINRUN_TEST_REDIS``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db.engine import make_engine, make_sessionmaker
from trainrun.db.migrate import upgrade
from trainrun.db.tables import Base
from trainrun.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "TRAINRUN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TRAINRUN_TEST_REDIS", "redis://127.0.0.1:6379/0")
TABLES = tuple(t.name for t in reversed(Base.metadata.sorted_tables))


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database for this test session, migrated to head; dropped at the end."""
    name = f"trainrun_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _with_database(PG_ADMIN_URL, name)
    upgrade(Settings(database_url=url))
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def queue_name() -> str:
    return f"trainrun-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def pg_settings(pg_url: str, redis_url: str, queue_name: str, tmp_path: Path) -> Iterator[Settings]:
    """Production-mode settings: PostgreSQL and Redis; tables emptied after each test."""
    settings = Settings(
        database_url=pg_url, broker_url=redis_url, home=tmp_path / "home", queue_name=queue_name
    )
    yield settings
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    r = redis.Redis.from_url(redis_url)
    for key in r.scan_iter(f"{queue_name}*"):  # the queue and its priority siblings
        r.delete(key)
    r.close()


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Embedded-mode settings under a temporary home, migrated to head."""
    settings = Settings(home=tmp_path / "home")
    upgrade(settings)
    return settings


@pytest.fixture(params=["sqlite", "postgresql"])
def any_settings(request: pytest.FixtureRequest) -> Settings:
    """Run the test on both backends."""
    name = "sqlite_settings" if request.param == "sqlite" else "pg_settings"
    return request.getfixturevalue(name)


@pytest.fixture
def engine(any_settings: Settings) -> Iterator[Engine]:
    eng = make_engine(any_settings)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def settings_env(settings: Settings) -> dict[str, str]:
    """The env vars that give a subprocess these settings."""
    env = {
        "TRAINRUN_HOME": str(settings.home),
        "TRAINRUN_QUEUE_NAME": settings.queue_name,
        "TRAINRUN_LEASE_SECONDS": str(settings.lease_seconds),
        "TRAINRUN_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        "TRAINRUN_MAX_ATTEMPTS": str(settings.max_attempts),
        "TRAINRUN_REAPER_INTERVAL_SECONDS": str(settings.reaper_interval_seconds),
        "TRAINRUN_RESEND_AFTER_SECONDS": str(settings.resend_after_seconds),
    }
    if settings.database_url:
        env["TRAINRUN_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["TRAINRUN_BROKER_URL"] = settings.broker_url
    return env
