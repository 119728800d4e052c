"""Prometheus metrics for ``GET /metrics``: HTTP latency measured here, job state read at scrape.

Workers run as prefork children on many machines and expose no port, so everything about
jobs is computed from the database when Prometheus scrapes (a few indexed queries):

- ``trainrun_jobs{state}``: jobs per status (one GROUP BY).
- ``trainrun_queue_depth``: queued job rows (the real queue); ``trainrun_broker_queue_length``:
  the Redis list of the queue when the broker is Redis (doorbells not yet taken by a worker).
- ``trainrun_running_jobs{lease}``: running jobs whose lease is fresh or expired;
  ``trainrun_job_heartbeat_age_seconds{job_id,worker}``: seconds since each one's heartbeat.
- ``trainrun_recent_epoch_duration_seconds``: a *gauge* histogram of the wall time of the
  epochs stored in the last hour (train + train_eval + val phase seconds, as the worker timed
  them). It describes a sliding window, so its counts may fall; use it as a distribution,
  not with ``rate()``.
- ``trainrun_webhook_deliveries_pending``: outbox rows not yet delivered or given up on.
- ``trainrun_http_request_duration_seconds{method,route,status}``: a real histogram, per API
  process, labelled by route template; for the SSE stream it measures the stream's life.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainrun.db.tables import (
    DeliveryStatus,
    EpochFigures,
    Job,
    JobStatus,
    Phase,
    WebhookDelivery,
    utcnow,
)
from trainrun.settings import Settings

log = logging.getLogger(__name__)

EPOCH_WINDOW = timedelta(hours=1)
EPOCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class JobStateCollector(Collector):
    """Reads job state from the database at scrape time."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        state = self.app.state
        factory = getattr(state, "read_sessionmaker", None) or getattr(state, "sessionmaker", None)
        if factory is None:  # scraped before the lifespan started
            return
        with factory() as session:
            yield from self._jobs(session)
            yield self._epoch_durations(session)
            yield GaugeMetricFamily(
                "trainrun_webhook_deliveries_pending",
                "Webhook deliveries not yet delivered or given up on.",
                value=session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.status == DeliveryStatus.pending.value)
                )
                or 0,
            )
        broker = _broker_queue_length(state.settings)
        if broker is not None:
            family = GaugeMetricFamily(
                "trainrun_broker_queue_length",
                "Messages waiting in the Redis list of the job queue.",
                labels=["queue"],
            )
            family.add_metric([state.settings.queue_name], broker)
            yield family

    def _jobs(self, session: Session) -> Iterable[Metric]:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        jobs = GaugeMetricFamily("trainrun_jobs", "Jobs by state.", labels=["state"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            "trainrun_queue_depth",
            "Queued job rows in the database (the real queue).",
            value=counts.get(JobStatus.queued.value, 0),
        )
        now = utcnow()
        running = session.execute(
            select(Job.id, Job.worker, Job.heartbeat_at, Job.lease_expires_at).where(
                Job.status == JobStatus.running.value
            )
        ).all()
        leases = GaugeMetricFamily(
            "trainrun_running_jobs",
            "Running jobs whose lease is fresh (worker alive) or expired (reaper due).",
            labels=["lease"],
        )
        fresh = sum(1 for r in running if r.lease_expires_at and r.lease_expires_at > now)
        leases.add_metric(["fresh"], fresh)
        leases.add_metric(["expired"], len(running) - fresh)
        yield leases
        ages = GaugeMetricFamily(
            "trainrun_job_heartbeat_age_seconds",
            "Seconds since each running job's worker last sent a heartbeat.",
            labels=["job_id", "worker"],
        )
        for r in running:
            if r.heartbeat_at is not None:
                ages.add_metric([r.id, r.worker or ""], (now - r.heartbeat_at).total_seconds())
        yield ages

    def _epoch_durations(self, session: Session) -> Metric:
        seconds = session.scalars(
            select(func.sum(EpochFigures.seconds))
            .where(
                EpochFigures.created_at >= utcnow() - EPOCH_WINDOW,
                EpochFigures.phase != Phase.test.value,
            )
            .group_by(EpochFigures.job_id, EpochFigures.epoch)
        ).all()
        values = [float(s or 0.0) for s in seconds]
        buckets = [(str(float(b)), sum(1 for v in values if v <= b)) for b in EPOCH_BUCKETS]
        buckets.append(("+Inf", len(values)))
        return GaugeHistogramMetricFamily(
            "trainrun_recent_epoch_duration_seconds",
            "Wall time of the epochs stored in the last hour (a sliding window).",
            buckets=buckets,
            gsum_value=sum(values),
        )


def _broker_queue_length(settings: Settings) -> int | None:
    url = settings.resolved_broker_url
    if not url.startswith(("redis://", "rediss://")):
        return None
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return int(client.llen(settings.queue_name))
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning("metrics: could not read the broker queue length: %s", exc)
        return None


class HttpMetrics:
    """Observes each HTTP request's duration under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes becomes a 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.histogram.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )


def install_metrics(app: FastAPI) -> None:
    """A registry per app (tests build many apps), its collector, and the latency middleware."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "trainrun_http_request_duration_seconds",
        "HTTP request duration by route template and status.",
        ["method", "route", "status"],
        buckets=HTTP_BUCKETS,
        registry=registry,
    )
    registry.register(JobStateCollector(app))
    app.state.metrics_registry = registry
    app.add_middleware(HttpMetrics, histogram=histogram)
