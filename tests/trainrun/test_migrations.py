"""Migrations: up to head, down to base and up again on both backends; schema == ORM metadata."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from tests.conftest import PG_ADMIN_URL
from trainrun.db.engine import make_engine
from trainrun.db.migrate import current_heads, downgrade, upgrade
from trainrun.db.tables import Base
from trainrun.settings import Settings

APP_TABLES = {"jobs", "epoch_figures", "artifacts"}


@pytest.fixture
def fresh_pg_settings(tmp_path: Path) -> Iterator[Settings]:
    """An empty PostgreSQL database of this test's own (not migrated); dropped afterwards."""
    name = f"trainrun_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield Settings(database_url=PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, home=tmp_path)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(home=tmp_path / "home")
    return request.getfixturevalue("fresh_pg_settings")


@pytest.fixture
def db_engine(empty_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(empty_settings)
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def schema_differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_downgrade_upgrade(empty_settings: Settings, db_engine: Engine) -> None:
    head = current_heads(empty_settings)
    assert len(head) == 1, head  # one linear history

    upgrade(empty_settings)
    assert table_names(db_engine) >= APP_TABLES
    assert revision_of(db_engine) in head
    assert schema_differences(db_engine) == []

    downgrade(empty_settings, "base")
    assert table_names(db_engine) & APP_TABLES == set()
    assert revision_of(db_engine) is None

    upgrade(empty_settings)
    assert table_names(db_engine) >= APP_TABLES
    assert revision_of(db_engine) in head
    assert schema_differences(db_engine) == []


def test_upgrade_twice_is_a_no_op(empty_settings: Settings, db_engine: Engine) -> None:
    upgrade(empty_settings)
    upgrade(empty_settings)
    assert table_names(db_engine) >= APP_TABLES
    assert schema_differences(db_engine) == []


def test_migrated_schema_has_the_named_constraints(
    empty_settings: Settings, db_engine: Engine
) -> None:
    upgrade(empty_settings)
    insp = inspect(db_engine)
    uniques = {c["name"] for c in insp.get_unique_constraints("epoch_figures")}
    assert "uq_epoch_figures_job_id_epoch_phase" in uniques
    indexes = {i["name"] for i in insp.get_indexes("jobs")}
    assert {"ix_jobs_status_created", "ix_jobs_owner_created"} <= indexes
    fks = insp.get_foreign_keys("epoch_figures")
    assert [(fk["referred_table"], fk["options"].get("ondelete")) for fk in fks] == [
        ("jobs", "CASCADE")
    ]


def test_an_empty_database_differs_from_the_metadata(db_engine: Engine) -> None:
    # The comparison the other tests rely on does see a missing schema.
    assert schema_differences(db_engine) != []
