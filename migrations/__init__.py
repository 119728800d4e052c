"""Alembic migrations. Run with ``trainrun db upgrade`` (see ``trainrun.db.migrate``)."""
