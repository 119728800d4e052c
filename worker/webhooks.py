"""The webhook dispatcher: sends due outbox rows, signed as the Standard Webhooks spec says.

It runs as a thread in every worker parent (next to the reaper) and as ``trainrun webhooks``.
Any number may run at once: each delivery is claimed under a lease (``claim_due``) and its
result is recorded only by the sender holding the current attempt. A sender that dies after
sending but before recording makes the receiver see the message again after the lease: the
delivery is at least once, and the stable ``webhook-id`` is what receivers deduplicate on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trainrun import __version__
from trainrun.db import webhook_queries
from trainrun.db.engine import make_engine, make_sessionmaker, transaction
from trainrun.settings import Settings

log = logging.getLogger(__name__)


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{id}.{timestamp}.{body}`` with the decoded secret."""
    key = webhook_queries.secret_bytes(secret)
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def encode_body(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def send(
    client: httpx.Client, delivery: webhook_queries.DueDelivery
) -> tuple[int | None, str | None]:
    """One POST; returns (status code, error). Redirects are not followed."""
    body = encode_body(delivery.payload)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": f"trainrun-webhooks/{__version__}",
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(delivery.secret, delivery.id, timestamp, body),
    }
    try:
        response = client.post(delivery.url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


def dispatch_once(factory: sessionmaker[Session], settings: Settings, client: httpx.Client) -> int:
    """Claim and send one batch of due deliveries; returns how many were attempted."""
    cfg = settings.webhooks
    with transaction(factory) as session:
        due = webhook_queries.claim_due(
            session, limit=cfg.batch_size, lease_seconds=cfg.lease_seconds
        )
    for delivery in due:
        code, error = send(client, delivery)
        with transaction(factory) as session:
            status = webhook_queries.record_result(
                session,
                delivery.id,
                delivery.attempt,
                response_code=code,
                error=error,
                max_attempts=cfg.max_attempts,
                backoff_base=cfg.backoff_seconds,
                backoff_cap=cfg.backoff_max_seconds,
            )
        level = logging.INFO if error is None else logging.WARNING
        log.log(
            level,
            "webhook delivery %s (%s) attempt %d: %s -> %s",
            delivery.id,
            delivery.payload.get("type"),
            delivery.attempt,
            error or code,
            status or "lease lost",
        )
    return len(due)


def make_client(settings: Settings) -> httpx.Client:
    return httpx.Client(timeout=settings.webhooks.timeout_seconds, follow_redirects=False)


def run_dispatcher(settings: Settings, stop: threading.Event) -> None:
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    try:
        with make_client(settings) as client:
            while not stop.is_set():
                try:
                    busy = dispatch_once(factory, settings, client)
                except SQLAlchemyError as exc:
                    log.warning("webhooks: database error, retrying next poll: %s", exc)
                    busy = 0
                if busy < settings.webhooks.batch_size:  # a full batch: more may be due now
                    stop.wait(settings.webhooks.poll_seconds)
    finally:
        engine.dispose()


def start_dispatcher_thread(settings: Settings, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(
        target=run_dispatcher, args=(settings, stop), name="webhooks", daemon=True
    )
    thread.start()
    return thread
