"""The loss catalogue. Each loss knows which targets it takes and returns per-sample data terms.

Classification targets are stored as class indices; a loss that needs one-hot or 0/1 targets
builds them itself, so the label format is checked once, at submit, against the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from trainrun.catalog import Catalog, KindSpec, NoParams, Params, tagged_union
from trainrun.datasets.base import Table, Task


@dataclass(frozen=True)
class Objective:
    """A loss bound to its dataset: ``per_sample(out, y)`` is the data term per sample (B,)."""

    name: str
    task: Task
    per_sample: Callable[[Tensor, Tensor], Tensor]
    threshold: float  # decision threshold when a classifier has one output
    probabilities: bool = False  # outputs must lie in [0, 1]


@dataclass(frozen=True)
class LossDef:
    tasks: tuple[Task, ...]
    output_dims: Callable[[Table], tuple[int, ...]]  # accepted widths, the first is the default
    bind: Callable[[Any, int], Objective]  # (params, output width) -> objective


LOSSES: Catalog[LossDef] = Catalog("loss")


def _targets_01(y: Tensor, width: int) -> Tensor:
    """Class indices -> 0/1 targets: one column for a single-output binary model, else one-hot."""
    if width == 1:
        return y.to(torch.float32).unsqueeze(1)
    return F.one_hot(y, width).to(torch.float32)


def _binary_dims(t: Table) -> tuple[int, ...]:
    return (t.n_classes, 1) if t.n_classes == 2 else (t.n_classes,)


def _regression_dims(t: Table) -> tuple[int, ...]:
    return (t.target_dim,) if t.task == "regression" else (t.n_classes,)


class CrossEntropyParams(Params):
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


LOSSES.register("cross_entropy", CrossEntropyParams)(
    LossDef(
        tasks=("classification",),
        output_dims=lambda t: (t.n_classes,),
        bind=lambda p, width: Objective(
            "cross_entropy",
            "classification",
            lambda out, y: F.cross_entropy(
                out, y, reduction="none", label_smoothing=p.label_smoothing
            ),
            threshold=0.0,
        ),
    )
)

LOSSES.register("bce", NoParams)(
    LossDef(
        tasks=("classification",),
        output_dims=_binary_dims,
        bind=lambda p, width: Objective(
            "bce",
            "classification",
            lambda out, y: F.binary_cross_entropy(
                out, _targets_01(y, width), reduction="none"
            ).mean(1),
            threshold=0.5,
            probabilities=True,
        ),
    )
)

LOSSES.register("bce_with_logits", NoParams)(
    LossDef(
        tasks=("classification",),
        output_dims=_binary_dims,
        bind=lambda p, width: Objective(
            "bce_with_logits",
            "classification",
            lambda out, y: F.binary_cross_entropy_with_logits(
                out, _targets_01(y, width), reduction="none"
            ).mean(1),
            threshold=0.0,
        ),
    )
)


def _regression_loss(
    name: str, fn: Callable[[Tensor, Tensor], Tensor]
) -> Callable[[Any, int], Objective]:
    def bind(p: Any, width: int) -> Objective:
        def per_sample(out: Tensor, y: Tensor) -> Tensor:
            target = y if y.dtype.is_floating_point else _targets_01(y, width)
            return fn(out, target).flatten(1).mean(1)

        return Objective(name, "regression", per_sample, threshold=0.5)

    return bind


LOSSES.register("mse", NoParams)(
    LossDef(
        tasks=("regression", "classification"),
        output_dims=_regression_dims,
        bind=_regression_loss("mse", lambda o, t: F.mse_loss(o, t, reduction="none")),
    )
)

LOSSES.register("l1", NoParams)(
    LossDef(
        tasks=("regression", "classification"),
        output_dims=_regression_dims,
        bind=_regression_loss("l1", lambda o, t: F.l1_loss(o, t, reduction="none")),
    )
)


class HuberParams(Params):
    delta: float = Field(default=1.0, gt=0)


def _huber(p: HuberParams, width: int) -> Objective:
    return _regression_loss(
        "huber", lambda o, t: F.huber_loss(o, t, reduction="none", delta=p.delta)
    )(p, width)


LOSSES.register("huber", HuberParams)(
    LossDef(tasks=("regression", "classification"), output_dims=_regression_dims, bind=_huber)
)

if TYPE_CHECKING:
    LossSpec = KindSpec
else:
    LossSpec = tagged_union(LOSSES, "kind")


def bind_objective(spec: Any, table: Table, width: int) -> Objective:
    """The objective for ``spec`` on ``table``'s targets. Regression metrics follow the task."""
    obj = LOSSES[spec.kind].build.bind(spec, width)
    if table.task == "classification" and obj.task == "regression":
        # mse/l1/huber on one-hot targets: still scored as a classifier (tie-aware accuracy).
        return Objective(obj.name, "classification", obj.per_sample, obj.threshold)
    return obj
