"""A per-process cache of each job's stored figure arrays, extended as epochs arrive.

The UI and the SDK read the same job again and again, and a running job's page polls it. So
the figure arrays of a job are kept (``curve_blocks.Arrays``), and a later read fetches only
the epochs stored since. The cache is exact:
 - a running job is extended with rows of epochs after the last one held; rows are only ever
   appended while one claim (fencing token) runs, since epochs are written in order;
 - anything else (a new claim re-writing epochs after a resume, the job ending, which adds
   the test row at the best epoch) drops the entry and reads the job again.
Entries are bounded by the number of rows held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from trainrun.db import curve_blocks
from trainrun.db.curve_blocks import Arrays
from trainrun.db.tables import Job, JobStatus

MAX_ROWS = 2_000_000  # ~ 200 MB of arrays across all entries


@dataclass
class _Entry:
    fence: int
    final: bool
    last_epoch: int
    arrays: Arrays
    responses: dict[str, bytes] = field(default_factory=dict)  # final jobs: encoded bodies

    @property
    def rows(self) -> int:
        return len(self.arrays["epoch"])


class CurveCache:
    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def arrays(self, session: Session, job: Job) -> Arrays:
        """The job's stored figures (``curve_blocks.figure_arrays``), by epoch, phase."""
        final = JobStatus(job.status).is_final
        with self._lock:
            entry = self._entries.get(job.id)
        # Usable: the same claim wrote it, and it is complete or the job is still running.
        if entry is not None and (entry.fence != job.fence or (final and not entry.final)):
            entry = None
        if entry is not None and entry.final:
            return entry.arrays
        since = entry.last_epoch if entry is not None else 0
        fresh = curve_blocks.figure_arrays(session, job.id, since, job.epoch_reached)
        if entry is not None:
            fresh = {c: np.concatenate([entry.arrays[c], fresh[c]]) for c in fresh}
        last = int(fresh["epoch"][-1]) if len(fresh["epoch"]) else 0
        self._store(job.id, _Entry(job.fence, final, last, fresh))
        return fresh

    def response(self, job: Job, variant: str) -> bytes | None:
        """An encoded body kept for an ended job, if this variant was built before."""
        with self._lock:
            entry = self._entries.get(job.id)
            if entry is None or not entry.final or entry.fence != job.fence:
                return None
            return entry.responses.get(variant)

    def keep_response(self, job: Job, variant: str, body: bytes) -> None:
        with self._lock:
            entry = self._entries.get(job.id)
            if entry is not None and entry.final and entry.fence == job.fence:
                entry.responses[variant] = body

    def _store(self, job_id: str, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(job_id, None)
            self._entries[job_id] = entry
            held = sum(e.rows for e in self._entries.values())
            while held > self.max_rows and len(self._entries) > 1:
                held -= self._entries.popitem(last=False)[1].rows
