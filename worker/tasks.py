"""The one Celery task, a thin shell over ``worker.runner.execute_job``.

Process state (engine, session factory, drain flag) is built in the parent before the pool
forks, so that every child inherits the engine's compiled statements (``worker.rehearsal``);
the parent closes its connections before any fork and each child opens its own, so no
database connection crosses a fork. No CUDA context is ever made in the parent.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from dataclasses import dataclass
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutting_down
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db.engine import make_engine, make_sessionmaker
from trainrun.settings import Settings, get_settings
from worker.celery_app import RUN_JOB, app, send_run_job
from worker.runner import execute_job

log = logging.getLogger(__name__)


@dataclass
class ProcessState:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    drain: threading.Event


_state: ProcessState | None = None


def process_state() -> ProcessState:
    global _state
    if _state is None:
        settings = get_settings()
        engine = make_engine(settings)
        _state = ProcessState(settings, engine, make_sessionmaker(engine), threading.Event())
    return _state


@worker_init.connect
def _preload_in_parent(**_: Any) -> None:
    """Before the pool forks: load what every one-job child would otherwise import itself, and
    compile the statements of a job's first epoch on the engine the children inherit."""
    from trainrun.warmup import preload_engine
    from worker.rehearsal import rehearse

    preload_engine()
    state = process_state()
    try:
        log.info("first-epoch statements rehearsed in %.3f s", rehearse(state.factory))
    except Exception as exc:  # the database may be down: children compile for themselves
        log.warning("could not rehearse the first epoch's statements: %s", exc)
    finally:
        state.engine.dispose()  # no connection of the parent's survives into a child
    # Objects that exist now live as long as the parent: keep the collector off them, so a
    # child's collections do not write to (and so copy) every page it shares with the parent.
    gc.freeze()


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    state = process_state()
    # SQLAlchemy's rule for a forked engine: drop the pool inherited from the parent without
    # touching its connections (the parent disposed of them already; this is the safe form).
    state.engine.dispose(close=False)
    # Connect now, while the child waits for work, not on the job's clock (bench/RESULTS.md
    # "service overhead"); the pool keeps the connection for the claim.
    try:
        with state.engine.connect():
            pass
    except Exception as exc:  # the database may be down; the job's own retries handle that
        log.warning("pool child could not pre-connect to the database: %s", exc)


def _drain_on_sigterm(state: ProcessState) -> None:
    """SIGTERM stops the loop between batches and hands the job back to the queue.

    Installed when the task starts: billiard resets the child's signal handlers after
    ``worker_process_init`` has run.
    """

    def on_term(signum: int, frame: Any) -> None:
        state.drain.set()

    signal.signal(signal.SIGTERM, on_term)


_reaper_stop: threading.Event | None = None


@worker_shutting_down.connect
def _drain_children(**_: Any) -> None:
    """Warm shutdown waits for running tasks; tell them to hand their jobs back instead."""
    from worker.lifecycle import signal_pool_children

    if _reaper_stop is not None:
        _reaper_stop.set()  # a draining worker must not ring doorbells it would answer itself
    signal_pool_children(signal.SIGTERM)


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    global _reaper_stop
    from worker.reaper import start_reaper_thread
    from worker.webhooks import start_dispatcher_thread

    _reaper_stop = start_reaper_thread(get_settings(), app)
    start_dispatcher_thread(get_settings(), _reaper_stop)  # stops with the reaper


@app.task(name=RUN_JOB, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    state = process_state()
    _drain_on_sigterm(state)
    outcome = execute_job(job_id, state.settings, state.factory, state.drain)
    _next_sweep_run(state, job_id)
    return outcome.value


def _next_sweep_run(state: ProcessState, job_id: str) -> None:
    """A sweep's job ended: give its slot to the next run now, not at the next reaper sweep."""
    from trainrun.sweeps.scheduler import step_after_job

    try:
        step_after_job(state.factory, lambda next_id: send_run_job(app, next_id), job_id)
    except Exception as exc:  # the reaper's sweep step does it later
        log.warning("job %s: sweep step after the job failed: %s", job_id, exc)
