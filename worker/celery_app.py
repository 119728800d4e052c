"""The Celery app. Tasks live in ``worker.tasks``; the API only ever sends by task name.

Settings follow DESIGN.md's reliability rules: late acks, prefetch 1, one job per child
process, no result backend (job state lives in our database), a long visibility timeout.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from trainrun.settings import Settings, get_settings

RUN_JOB = "trainrun.run_job"


def broker_options(settings: Settings) -> dict[str, Any]:
    # Redis re-delivers an unacked message after the visibility timeout; a job may train for
    # days (default 7), and the claim (not the broker) stops a second delivery training it.
    opts: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_seconds}
    if settings.resolved_broker_url.startswith("filesystem"):
        folder = settings.broker_dir
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        opts.update(
            data_folder_in=str(folder / "queue"),
            data_folder_out=str(folder / "queue"),
            control_folder=str(folder / "control"),
            store_processed=False,
        )
    return opts


def make_celery(settings: Settings) -> Celery:
    app = Celery("trainrun", broker=settings.resolved_broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_concurrency=1,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        # A submit must not hang on a dead broker: the row is the queue, the reaper re-sends.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,  # on for Flower (compose)
        worker_enable_remote_control=False,
    )
    return app


def send_run_job(app: Celery, job_id: str) -> None:
    """Ring the doorbell for a committed job row."""
    app.send_task(RUN_JOB, args=[job_id], queue=app.conf.task_default_queue)


app = make_celery(get_settings())
app.conf.imports = ("worker.tasks",)
