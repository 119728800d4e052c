"""ORM tables. Figures are stored as sufficient statistics; averages are derived on read."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the Python side on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.timed_out}
)


class Phase(enum.StrEnum):
    train = "train"  # train mode, as the optimisation loop saw it
    train_eval = "train_eval"  # eval mode over the training set
    val = "val"
    test = "test"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


_status_values = ", ".join(f"'{s.value}'" for s in JobStatus)
_phase_values = ", ".join(f"'{p.value}'" for p in Phase)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN ({_status_values})", name="status"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
        UniqueConstraint("owner", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), default="anonymous")
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # counts against max_attempts
    fence: Mapped[int] = mapped_column(Integer, default=0)  # fencing token: +1 on every claim
    epochs_total: Mapped[int] = mapped_column(Integer)
    epoch_reached: Mapped[int] = mapped_column(Integer, default=0)
    parameter_count: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # A sweep's job: its sweep and variant index (the variant's overrides: ``SweepVariant``).
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="SET NULL"), default=None, index=True
    )
    sweep_variant: Mapped[int | None] = mapped_column(Integer, default=None)


class EpochFigures(Base):
    """One phase of one epoch, as sufficient statistics (sums and counts, never averages)."""

    __tablename__ = "epoch_figures"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", "phase"),
        CheckConstraint(f"phase IN ({_phase_values})", name="phase"),
        CheckConstraint("n >= 0", name="n_nonnegative"),
        Index("ix_epoch_figures_created_at", "created_at"),  # /metrics reads recent epochs
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    loss_sum: Mapped[float] = mapped_column(Float)  # data term only, summed over samples
    penalty: Mapped[float] = mapped_column(Float, default=0.0)  # regulariser value
    # Classification: tie-aware hits (a k-way tie holding the true class earns 1/k).
    correct: Mapped[float | None] = mapped_column(Float, default=None)
    ties: Mapped[int | None] = mapped_column(Integer, default=None)
    # Regression: error sums and target moments, enough for MSE, MAE and R².
    sse: Mapped[float | None] = mapped_column(Float, default=None)
    sae: Mapped[float | None] = mapped_column(Float, default=None)
    target_sum: Mapped[float | None] = mapped_column(Float, default=None)
    target_sq_sum: Mapped[float | None] = mapped_column(Float, default=None)
    target_count: Mapped[int | None] = mapped_column(Integer, default=None)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CurveBlock(Base):
    """A read copy of a job's figure rows for a range of epochs, packed as one NumPy array.

    A 10,000-epoch job has 30,000 figure rows; reading them row by row costs more than the
    whole curves response may. ``trainrun.db.curve_blocks`` keeps each block equal to the rows
    of its range in the same transaction as every figure write; the rows stay the truth.
    """

    __tablename__ = "curve_blocks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    first_epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_epoch: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    # The columns packed one after the other, e.g. "epoch:<i4,phase:i1,n:<f8,loss_sum:<f8".
    layout: Mapped[str] = mapped_column(String(400))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # "checkpoint" | "model"
    path: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


_format_values = "'csv', 'csv.gz', 'parquet', 'npz'"


class Dataset(Base):
    """An uploaded data file; the file lies at ``path`` under the data root."""

    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(f"format IN ({_format_values})", name="format"),
        CheckConstraint("bytes >= 0 AND rows >= 0", name="sizes_nonnegative"),
        Index("ix_datasets_owner_created", "owner", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), default="anonymous")
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)  # relative to the data root
    bytes: Mapped[int] = mapped_column(BigInteger)  # uploads may pass 2 GiB
    sha256: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger)
    columns: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


WEBHOOK_EVENTS = (
    "job.started",
    "job.epoch",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.timed_out",
)


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # due at ``next_attempt_at`` (or being sent, under a lease)
    succeeded = "succeeded"
    failed = "failed"  # gave up after the last attempt


_delivery_status_values = ", ".join(f"'{s.value}'" for s in DeliveryStatus)


class Webhook(Base):
    """An owner's endpoint for job events. The secret signs deliveries, so it is kept as is."""

    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_owner_created", "owner", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(100))  # whsec_<base64>
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: an outbox row, inserted with the job change it reports."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN ({_delivery_status_values})", name="status"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)  # webhook-id
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(32), index=True)  # outlives the job on purpose
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]  # the body, fixed when the event happened
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_response_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)


class SweepRunState(enum.StrEnum):
    pending = "pending"  # waiting for a free slot (max_concurrent); no job yet
    launched = "launched"  # its job exists; the job's status tells the rest
    cancelled = "cancelled"  # the sweep was cancelled before the run started


_sweep_run_state_values = ", ".join(f"'{s.value}'" for s in SweepRunState)


class Sweep(Base):
    """Many variants of one job spec; each run (variant x seed) becomes an ordinary job."""

    __tablename__ = "sweeps"
    __table_args__ = (
        Index("ix_sweeps_owner_created", "owner", "created_at", "id"),
        UniqueConstraint("owner", "idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), default="anonymous")
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]  # the sweep spec as submitted (validated)
    max_concurrent: Mapped[int] = mapped_column(Integer)
    runs_total: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SweepVariant(Base):
    """One run of a sweep: a variant's overrides (and seed), its job once it is launched."""

    __tablename__ = "sweep_variants"
    __table_args__ = (
        UniqueConstraint("sweep_id", "variant", "repeat"),
        CheckConstraint(f"state IN ({_sweep_run_state_values})", name="state"),
        Index("ix_sweep_variants_sweep_state", "sweep_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    variant: Mapped[int] = mapped_column(Integer)  # index into the expanded variations
    repeat: Mapped[int] = mapped_column(Integer, default=0)  # index into repeats.seeds
    seed: Mapped[int | None] = mapped_column(BigInteger, default=None)  # set by repeats
    overrides: Mapped[dict[str, Any]]  # path -> value, applied to the base spec
    spec: Mapped[dict[str, Any]]  # the job spec, validated and dry-built at submit
    parameter_count: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=SweepRunState.pending.value)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None, index=True
    )
    stop_reason: Mapped[str | None] = mapped_column(Text, default=None)  # the median rule's
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    launched_at: Mapped[datetime | None] = mapped_column(default=None)
