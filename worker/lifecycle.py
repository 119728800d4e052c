"""Helpers for the worker's parent process (no CUDA, no jobs: it only supervises)."""

from __future__ import annotations

import logging
import os

from billiard.process import active_children

log = logging.getLogger(__name__)


def signal_pool_children(signum: int) -> None:
    """Send ``signum`` to every prefork pool child of this process."""
    for child in active_children():
        if child.pid is None:
            continue
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            continue
        log.info("sent signal %s to pool child %s", signum, child.pid)
