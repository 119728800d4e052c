"""Pay once, at start, for imports a job would otherwise pay: in the worker parent before the
pool forks, and in the API (which dry-builds every submitted spec) in a background thread.

A pool child runs one job and exits (``worker_max_tasks_per_child=1``), so whatever it imports
lazily it imports for every job; the API's first submit would pay them too. Building a model
probes each layer on the meta device, and the first meta-device op pulls in ``torch._refs``
and ``torch._dynamo`` (about 2 s on this machine, measured in bench/RESULTS.md "service
overhead"). Probing every layer kind here leaves those modules loaded. Meta tensors only: no
compute, no thread pool, no CUDA. The small built-in datasets are loaded too: their
per-process caches serve every later job (and every forked child) on them."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from models.layers import LAYERS
from trainrun.datasets import DATASETS, load_table

log = logging.getLogger(__name__)

_PARAM_GUESSES: tuple[dict[str, Any], ...] = (
    {},
    {"out_channels": 2, "kernel_size": 1},
    {"out_features": 2},
    {"kernel_size": 1},
)
_SHAPES = ((4,), (2, 8), (2, 8, 8))
# Small, fixed sources (sine at its default parameters): kilobytes each, worth sharing.
BUILTIN_SOURCES = ("sine", "digits", "iris", "wine", "breast_cancer", "diabetes")


def preload_engine() -> float:
    """Probe every layer kind on the meta device and load the small built-in datasets;
    returns the seconds it took."""
    t0 = time.perf_counter()
    for source in BUILTIN_SOURCES:
        try:
            load_table(source, DATASETS[source].params.model_validate({}))
        except Exception as exc:  # a missing optional source must not stop the worker
            log.warning("could not preload dataset %s: %s", source, exc)
    for entry in LAYERS:
        for raw in _PARAM_GUESSES:
            try:
                params = entry.params.model_validate(raw)
            except ValueError:
                continue
            for shape in _SHAPES:
                try:
                    with torch.device("meta"):
                        module = entry.build(params, shape)
                        module(torch.empty((2, *shape))).sum().backward()
                except Exception:  # a shape this layer does not take: the next one may
                    continue
            break
    seconds = time.perf_counter() - t0
    log.info("engine imports preloaded in %.2f s", seconds)
    return seconds
