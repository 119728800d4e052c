"""A rehearsal of a job's way to its first epoch, run by the worker parent and rolled back.

A pool child runs one job and exits, so every job used to pay SQLAlchemy's first compilation
of each statement on that way (the claim, the job load, the checkpoint look-up, the epoch
upsert, the webhook events): about 30 ms in a fresh child (bench/RESULTS.md, "service
overhead"). The parent runs those statements once, on the engine its children inherit, in a
transaction it rolls back, then closes its connections: every child starts with the
statements compiled and with no connection of the parent's.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.tables import Job

log = logging.getLogger(__name__)

OWNER = "trainrun-rehearsal"  # no webhook subscription matches it; nothing is committed
_STATS = {"n": 1, "loss_sum": 1.0, "penalty": 0.0, "correct": 1.0, "ties": 0, "seconds": 0.0}


def rehearse(factory: sessionmaker[Session]) -> float:
    """Run the first-epoch statements in a transaction that is rolled back; returns seconds."""
    t0 = time.perf_counter()
    with factory() as session:
        try:
            job_id = queries.create_job(
                session, name="rehearsal", spec={}, owner=OWNER, epochs_total=1, parameter_count=0
            ).id
            token = queries.claim_job(session, job_id, "rehearsal", 60.0, 1)
            if token is None:
                raise RuntimeError("the rehearsal job could not be claimed")
            session.expunge_all()  # so that the job is loaded with SQL, as the runner loads it
            session.get(Job, job_id)
            queries.get_artifact(session, job_id, "checkpoint")
            queries.heartbeat(session, job_id, token, 60.0)
            figures = {phase: dict(_STATS) for phase in ("train", "train_eval", "val")}
            queries.record_epoch(session, job_id, token, 1, figures, 60.0)
        finally:
            session.rollback()
    return time.perf_counter() - t0
