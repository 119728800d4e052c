"""Settings read from the environment (prefix ``TRAINRUN_``); the defaults are the embedded mode."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Ceilings a submitted spec must stay under (checked at submit, before anything is queued)."""

    model_config = SettingsConfigDict(env_prefix="TRAINRUN_LIMIT_", extra="ignore")

    max_epochs: int = 10_000
    max_parameters: int = 50_000_000
    max_batch_size: int = 1_000_000
    max_body_bytes: int = 1_000_000
    max_dataset_bytes: int = 2 * 1024**3  # one uploaded data file
    max_dataset_rows: int = 20_000_000
    max_active_jobs_per_owner: int = 100  # queued plus running
    requests_per_minute: int = 1200  # per token (per API process)
    request_burst: int = 200


class WebhookSettings(BaseSettings):
    """Delivery of webhook events (``worker.webhooks``)."""

    model_config = SettingsConfigDict(env_prefix="TRAINRUN_WEBHOOK_", extra="ignore")

    max_attempts: int = 8  # then the delivery is marked failed
    backoff_seconds: float = 1.0  # the wait after the first failure; doubled after each
    backoff_max_seconds: float = 600.0
    timeout_seconds: float = 5.0  # per request
    lease_seconds: float = 60.0  # a claimed delivery is due again if its sender dies
    poll_seconds: float = 1.0
    batch_size: int = 20


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINRUN_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Root for embedded-mode state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; SQLite under home if unset.")
    broker_url: str = Field(
        default="", description="Celery broker; filesystem:// under home if unset."
    )
    artifact_dir: Path | None = Field(default=None, description="Checkpoints and models.")
    data_dir: Path | None = Field(default=None, description="Root for user data files.")
    auth_enabled: bool = False
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    max_attempts: int = 3
    reaper_interval_seconds: float = 15.0
    resend_after_seconds: float = Field(
        default=300.0, description="re-send the message of a job queued this long (lost message)"
    )
    visibility_timeout_seconds: float = Field(
        default=7 * 24 * 3600.0,
        description="Redis re-delivers an unacked message after this; the claim drops it",
    )
    queue_name: str = "trainrun"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    task_events: bool = Field(default=False, description="Celery task events (for Flower)")
    limits: Limits = Field(default_factory=Limits)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'trainrun.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost/"

    @property
    def broker_dir(self) -> Path:
        return (self.home / "broker").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.home / "artifacts").resolve()

    @property
    def resolved_data_dir(self) -> Path:
        return (self.data_dir or self.home / "data").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
