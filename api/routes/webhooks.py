"""Webhooks: an owner registers a URL for job events; deliveries are signed (Standard Webhooks).

The signing secret is returned once, by the create call. Sending is the worker's job
(``worker.webhooks``); this module only manages endpoints and shows the delivery log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field, field_validator

from api.deps import OwnerDep, PrincipalDep, SessionDep
from api.responses import errors
from trainrun.db import webhook_queries
from trainrun.db.tables import Webhook, WebhookDelivery

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookEvent = Literal[
    "job.started", "job.epoch", "job.succeeded", "job.failed", "job.cancelled", "job.timed_out"
]


class WebhookCreate(BaseModel):
    model_config = {"extra": "forbid"}

    url: str = Field(max_length=2000, description="http:// or https:// endpoint")
    events: list[WebhookEvent] = Field(min_length=1, description="the events to send")
    description: str = Field(default="", max_length=200)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError("the URL must start with http:// or https://")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not allowed")
        if parts.fragment:
            raise ValueError("the URL must not have a #fragment")
        return parts.geturl()

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(events))


class WebhookPublic(BaseModel):
    id: str
    owner: str
    url: str
    events: list[str]
    description: str
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookPublic:
        return cls(
            id=hook.id,
            owner=hook.owner,
            url=hook.url,
            events=hook.events,
            description=hook.description,
            created_at=hook.created_at,
        )


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="whsec_<base64>: verifies webhook-signature; shown only once")


class WebhooksPublic(BaseModel):
    data: list[WebhookPublic]


class DeliveryPublic(BaseModel):
    id: str = Field(description="the webhook-id header; the same on every retry")
    event: str
    job_id: str
    status: str = Field(description="pending, succeeded or failed (gave up)")
    attempts: int
    last_response_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="null once the delivery is settled")
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: WebhookDelivery) -> DeliveryPublic:
        return cls(
            id=d.id,
            event=d.event,
            job_id=d.job_id,
            status=d.status,
            attempts=d.attempts,
            last_response_code=d.last_response_code,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            created_at=d.created_at,
            updated_at=d.updated_at,
            delivered_at=d.delivered_at,
        )


class DeliveriesPublic(BaseModel):
    data: list[DeliveryPublic]


def valid_webhook(webhook_id: str, session: SessionDep, owner: OwnerDep) -> Webhook:
    return webhook_queries.get_webhook(session, webhook_id, owner)


WebhookDep = Annotated[Webhook, Depends(valid_webhook)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=errors(400, 413),
)
def create_webhook(
    body: WebhookCreate, response: Response, session: SessionDep, principal: PrincipalDep
) -> WebhookCreated:
    """Events of the caller's jobs go to ``url``; keep the returned secret to verify them."""
    hook = webhook_queries.create_webhook(
        session,
        owner=principal.owner,
        url=body.url,
        events=body.events,
        description=body.description,
    )
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(**WebhookPublic.of(hook).model_dump(), secret=hook.secret)


@router.get("", response_model=WebhooksPublic)
def list_webhooks(session: SessionDep, owner: OwnerDep) -> WebhooksPublic:
    return WebhooksPublic(
        data=[WebhookPublic.of(h) for h in webhook_queries.list_webhooks(session, owner)]
    )


@router.get("/{webhook_id}", response_model=WebhookPublic, responses=errors(404))
def get_webhook(hook: WebhookDep) -> WebhookPublic:
    return WebhookPublic.of(hook)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
def delete_webhook(hook: WebhookDep, session: SessionDep) -> Response:
    """Pending deliveries are dropped with it."""
    webhook_queries.delete_webhook(session, hook)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=DeliveriesPublic, responses=errors(404))
def list_deliveries(
    hook: WebhookDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveriesPublic:
    """The delivery log, newest first."""
    rows = webhook_queries.list_deliveries(session, hook.id, limit)
    return DeliveriesPublic(data=[DeliveryPublic.of(d) for d in rows])
