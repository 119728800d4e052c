"""The sweep scheduler step: stop variants by the median rule, then fill free slots with jobs.

Run by the reaper loop (every worker, and ``trainrun reaper``) and after each sweep job ends.
Each sweep is stepped in its own short transaction under its row lock (PostgreSQL skips a
sweep another scheduler holds; SQLite serialises writers), so two schedulers never launch the
same run twice or more than ``max_concurrent`` at once. Doorbells ring after the commit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import sweep_queries
from trainrun.db.engine import transaction
from trainrun.db.tables import Job, JobStatus, Sweep
from trainrun.figures import STAT_COLUMNS, derive
from trainrun.sweeps.median import Contender, median_decisions
from trainrun.sweeps.spec import MedianStopping, SweepSpec

log = logging.getLogger(__name__)
Ring = Callable[[str], None]


def apply_median_rule(session: Session, sweep: Sweep, rule: MedianStopping) -> int:
    """Request a cancel for every running variant the rule stops; how many were stopped."""
    runs = [(r, j) for r, j in sweep_queries.sweep_runs(session, [sweep.id]) if j is not None]
    if not any(j.status == JobStatus.running.value and not j.cancel_requested for _, j in runs):
        return 0
    values: dict[str, dict[int, float]] = {}
    for row in sweep_queries.figures_for_jobs(session, [j.id for _, j in runs], rule.phase):
        value = derive({c: getattr(row, c) for c in STAT_COLUMNS}).get(rule.name)
        if value is not None or row.n:
            values.setdefault(row.job_id, {})[row.epoch] = math.nan if value is None else value
    contenders = [
        Contender(
            r.id,
            r.variant,
            j.status == JobStatus.running.value and not j.cancel_requested,
            values.get(j.id, {}),
        )
        for r, j in runs
    ]
    by_key = {r.id: (r, j) for r, j in runs}
    stopped = 0
    for decision in median_decisions(contenders, rule):
        run, job = by_key[decision.key]
        reason = decision.reason(rule.metric)
        if sweep_queries.stop_run(session, run, job, reason):
            log.info("sweep %s: job %s %s", sweep.id, job.id, reason)
            stopped += 1
    return stopped


def step_sweep(session: Session, sweep_id: str) -> list[str]:
    """One sweep's step; the ids of the jobs it created (ring them after the commit)."""
    sweep = sweep_queries.lock_sweep(session, sweep_id)
    if sweep is None:
        return []
    rule = SweepSpec.model_validate(sweep.spec).median_stopping
    if rule is not None and not sweep.cancel_requested:
        apply_median_rule(session, sweep, rule)
    return sweep_queries.launch_pending(session, sweep)


def _ring_all(ring: Ring, job_ids: list[str]) -> None:
    for job_id in job_ids:
        try:
            ring(job_id)
        except Exception as exc:  # broker down: the job stays queued and the reaper re-rings
            log.warning("sweep job %s created but its message could not be sent: %s", job_id, exc)


def step_sweeps(factory: sessionmaker[Session], ring: Ring) -> list[str]:
    """Step every active sweep; the ids of the jobs launched."""
    with transaction(factory) as session:
        sweep_ids = sweep_queries.active_sweep_ids(session)
    launched: list[str] = []
    for sweep_id in sweep_ids:
        with transaction(factory) as session:
            job_ids = step_sweep(session, sweep_id)
        _ring_all(ring, job_ids)
        launched += job_ids
    return launched


def step_after_job(factory: sessionmaker[Session], ring: Ring, job_id: str) -> list[str]:
    """After a job ends: if it belongs to a sweep, launch the next run without waiting."""
    with transaction(factory) as session:
        job = session.get(Job, job_id)
        job_ids = step_sweep(session, job.sweep_id) if job is not None and job.sweep_id else []
    _ring_all(ring, job_ids)
    return job_ids
