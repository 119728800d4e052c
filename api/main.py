"""The app factory. Engines and the Celery producer are built in ``lifespan``, never at import."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from api.auth import require_principal
from api.body_limit import BodySizeLimit
from api.curve_cache import CurveCache
from api.errors import install_error_handlers
from api.metrics import install_metrics
from api.ratelimit import RateLimiter
from api.responses import errors
from api.routes import (
    artifacts,
    compare,
    curves,
    datasets,
    diagnosis,
    events,
    health,
    jobs,
    metrics,
    sweeps,
    web,
    webhooks,
)
from trainrun import __version__
from trainrun.db.engine import make_engine, make_sessionmaker, read_only
from trainrun.settings import Settings, get_settings
from trainrun.warmup import preload_engine
from worker.celery_app import make_celery


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One connection per threadpool thread (anyio's default is 40): a request never waits
        # for a pooled connection behind others' (a pool timeout would be a 500).
        engine = make_engine(settings, pool_size=10, max_overflow=40)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.read_sessionmaker = make_sessionmaker(read_only(engine))
        app.state.curve_cache = CurveCache()
        app.state.celery = make_celery(settings)
        app.state.rate_limiter = RateLimiter(
            settings.limits.requests_per_minute, settings.limits.request_burst
        )
        # Submits dry-build the spec on the meta device: its lazy imports are paid here, in the
        # background, not by the first user's POST (1-3 s, bench/RESULTS.md "service overhead").
        threading.Thread(target=preload_engine, name="preload", daemon=True).start()
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
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.limits.max_body_bytes,
        exempt=lambda path: path.startswith("/v1/datasets"),  # uploads have their own limit
    )
    install_metrics(app)  # outermost middleware: times every response, 413s included
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(web.router)  # the UI: outside /v1, it sends the token itself
    v1 = [Depends(require_principal)]  # every /v1 route: bearer token (if on) and rate limit
    for router in (
        jobs.router,
        curves.router,
        events.router,
        compare.router,
        diagnosis.router,
        artifacts.router,
        datasets.router,
        webhooks.router,
        sweeps.router,
    ):
        app.include_router(router, dependencies=v1, responses=errors(401, 429, 503))
    return app
