"""The app factory. Engines and the Celery producer are built in ``lifespan``, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.errors import install_error_handlers
from api.routes import health, jobs
from trainrun import __version__
from trainrun.db.engine import make_engine, make_sessionmaker
from trainrun.settings import Settings, get_settings
from worker.celery_app import make_celery


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.celery = make_celery(settings)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="trainrun",
        version=__version__,
        summary="Declarative training jobs with honest per-epoch curves.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    return app
