"""Webhooks and their delivery outbox. Callers own the transaction; these only execute and flush.

An event is recorded by ``enqueue_job_event`` inside the transaction that changes the job, so a
delivery row exists if and only if the change was committed (the outbox pattern). Senders
(``worker.webhooks``) claim due rows with ``claim_due``: the claim pushes ``next_attempt_at``
forward by a lease and bumps ``attempts``, which is the fencing token for recording the result.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from trainrun.db.tables import DeliveryStatus, Job, Webhook, WebhookDelivery, utcnow
from trainrun.errors import NotFound

SECRET_PREFIX = "whsec_"
LAST_ERROR_CHARS = 500


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def create_webhook(
    session: Session, *, owner: str, url: str, events: Sequence[str], description: str = ""
) -> Webhook:
    hook = Webhook(
        owner=owner, url=url, events=list(events), secret=new_secret(), description=description
    )
    session.add(hook)
    session.flush()
    return hook


def get_webhook(session: Session, webhook_id: str, owner: str | None = None) -> Webhook:
    """The webhook, or ``NotFound``; with ``owner`` set, another owner's is also not found."""
    hook = session.get(Webhook, webhook_id)
    if hook is None or (owner is not None and hook.owner != owner):
        raise NotFound(f"webhook {webhook_id} not found")
    return hook


def list_webhooks(session: Session, owner: str | None) -> Sequence[Webhook]:
    q = select(Webhook).order_by(Webhook.created_at.desc(), Webhook.id.desc())
    if owner is not None:
        q = q.where(Webhook.owner == owner)
    return session.scalars(q).all()


def delete_webhook(session: Session, hook: Webhook) -> None:
    """Its pending deliveries go with it (they would have nowhere to go)."""
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.flush()


def list_deliveries(session: Session, webhook_id: str, limit: int) -> Sequence[WebhookDelivery]:
    q = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
    )
    return session.scalars(q).all()


_JOB_FIELDS = (
    Job.id,
    Job.name,
    Job.owner,
    Job.status,
    Job.attempt,
    Job.epoch_reached,
    Job.epochs_total,
    Job.error,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def enqueue_job_event(session: Session, job_id: str, event: str) -> int:
    """Add one delivery per webhook of the job's owner that wants ``event``; returns how many.

    The job is read column by column (not through the identity map) so the payload shows the
    row as the caller's UPDATE left it.
    """
    hooks = session.execute(
        select(Webhook.id, Webhook.events)
        .join(Job, Job.owner == Webhook.owner)
        .where(Job.id == job_id)
    ).all()
    wanted = [h.id for h in hooks if event in h.events]
    if not wanted:
        return 0  # the common case costs one indexed query
    row = session.execute(select(*_JOB_FIELDS).where(Job.id == job_id)).one()
    now = utcnow()
    payload = {
        "type": event,
        "timestamp": now.isoformat(),
        "data": {
            "id": row.id,
            "name": row.name,
            "owner": row.owner,
            "status": row.status,
            "attempt": row.attempt,
            "epoch": row.epoch_reached,
            "epochs_total": row.epochs_total,
            "error": row.error,
            "created_at": _iso(row.created_at),
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
        },
    }
    session.add_all(
        WebhookDelivery(
            webhook_id=hook_id,
            job_id=job_id,
            event=event,
            payload=payload,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for hook_id in wanted
    )
    session.flush()
    return len(wanted)


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery with what its sender needs; ``attempt`` is the fencing token."""

    id: str
    attempt: int
    url: str
    secret: str
    payload: dict[str, Any]


def claim_due(session: Session, *, limit: int, lease_seconds: float) -> list[DueDelivery]:
    """Take up to ``limit`` due deliveries for this sender.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent senders take disjoint rows without
    waiting. SQLite: the write transaction (``BEGIN IMMEDIATE``) serialises senders. Either
    way the claim moves ``next_attempt_at`` past the lease, so no one else sees the row as due
    until this sender records a result or dies.
    """
    now = utcnow()
    due = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == DeliveryStatus.pending.value,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(due))
    if not ids:
        return []
    claimed = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id.in_(ids),
            WebhookDelivery.status == DeliveryStatus.pending.value,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(WebhookDelivery.id, WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    tokens = {r.id: int(r.attempts) for r in claimed}
    rows = session.execute(
        select(WebhookDelivery.id, WebhookDelivery.payload, Webhook.url, Webhook.secret)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id.in_(list(tokens)))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at)
    ).all()
    return [DueDelivery(r.id, tokens[r.id], r.url, r.secret, r.payload) for r in rows]


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """The wait after failed attempt ``attempt`` (1-based): base, 2 base, 4 base, ... capped."""
    return float(min(cap, base * 2 ** min(attempt - 1, 30)))


def record_result(
    session: Session,
    delivery_id: str,
    attempt: int,
    *,
    response_code: int | None,
    error: str | None,
    max_attempts: int,
    backoff_base: float,
    backoff_cap: float,
) -> str | None:
    """Store one attempt's outcome, fenced on ``attempt``; returns the new status or None."""
    now = utcnow()
    ok = error is None and response_code is not None and 200 <= response_code < 300
    values: dict[str, Any] = {
        "last_response_code": response_code,
        "last_error": None if error is None else error[:LAST_ERROR_CHARS],
        "updated_at": now,
    }
    if ok:
        values.update(status=DeliveryStatus.succeeded.value, delivered_at=now)
    elif attempt >= max_attempts:
        values.update(status=DeliveryStatus.failed.value)
    else:
        values.update(
            next_attempt_at=now
            + timedelta(seconds=backoff_seconds(attempt, backoff_base, backoff_cap))
        )
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.attempts == attempt,
            WebhookDelivery.status == DeliveryStatus.pending.value,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        return None  # the lease ran out and another sender took over
    return str(values.get("status", DeliveryStatus.pending.value))
