"""Alembic environment: the URL comes from trainrun's settings unless the caller set one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from trainrun.db.engine import make_engine
from trainrun.db.tables import Base
from trainrun.settings import Settings

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite alters tables by copy-and-move
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    settings = Settings(database_url=url) if url else Settings()
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
