"""A heartbeat thread with its own connection: extends the lease and reads the cancel flag."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from trainrun.db import queries
from trainrun.db.engine import transaction

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        factory: sessionmaker[Session],
        job_id: str,
        token: int,
        interval: float,
        lease_seconds: float,
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.factory = factory
        self.job_id = job_id
        self.token = token
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.cancelled = threading.Event()
        self.fenced = threading.Event()
        self._stop_event = threading.Event()
        self._last_ok = time.monotonic()

    def beat(self) -> None:
        """One lease extension; a database error is retried next beat, until the lease runs out."""
        try:
            with transaction(self.factory) as session:
                if queries.heartbeat(session, self.job_id, self.token, self.lease_seconds):
                    self.cancelled.set()
            self._last_ok = time.monotonic()
        except queries.Fenced:
            log.warning("job %s attempt %s lost its lease", self.job_id, self.token)
            self.fenced.set()
        except SQLAlchemyError as exc:
            log.warning("heartbeat for job %s failed: %s", self.job_id, exc)
            if time.monotonic() - self._last_ok > self.lease_seconds:
                # Our lease has run out by now: another worker may own the job. Stand down.
                log.warning("job %s: no heartbeat within the lease; fencing ourselves", self.job_id)
                self.fenced.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.beat()
            if self.fenced.is_set():
                return

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=self.interval + 5)
