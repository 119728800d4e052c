"""The learning-rate scheduler catalogue; each entry steps per batch or per epoch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch.optim.lr_scheduler import LRScheduler

from trainrun.catalog import Catalog, KindSpec, Params, tagged_union


@dataclass(frozen=True)
class Horizon:
    epochs: int
    batches_per_epoch: int


SchedulerBuilder = Callable[[Any, torch.optim.Optimizer, Horizon], LRScheduler]
SCHEDULERS: Catalog[SchedulerBuilder] = Catalog("scheduler")


class StepParams(Params):
    step_size: int = Field(default=10, ge=1, description="epochs between decays")
    gamma: float = Field(default=0.1, gt=0, le=1)


@SCHEDULERS.register("step", StepParams, per_batch=False)
def _step(p: StepParams, opt: torch.optim.Optimizer, h: Horizon) -> LRScheduler:
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""
    return torch.optim.lr_scheduler.StepLR(opt, step_size=p.step_size, gamma=p.gamma)


class CosineParams(Params):
    eta_min: float = Field(default=0.0, ge=0)


@SCHEDULERS.register("cosine", CosineParams, per_batch=False)
def _cosine(p: CosineParams, opt: torch.optim.Optimizer, h: Horizon) -> LRScheduler:
    """Cosine annealing from the optimizer's rate to ``eta_min`` over the job's epochs."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=h.epochs, eta_min=p.eta_min)


class OneCycleParams(Params):
    max_lr: float = Field(gt=0)
    pct_start: float = Field(default=0.3, gt=0, lt=1)
    div_factor: float = Field(default=25.0, gt=0)
    final_div_factor: float = Field(default=1e4, gt=0)


@SCHEDULERS.register("onecycle", OneCycleParams, per_batch=True)
def _onecycle(p: OneCycleParams, opt: torch.optim.Optimizer, h: Horizon) -> LRScheduler:
    """One cycle: warm up to ``max_lr`` then anneal, stepping every batch."""
    return torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=p.max_lr,
        total_steps=h.epochs * h.batches_per_epoch,
        pct_start=p.pct_start,
        div_factor=p.div_factor,
        final_div_factor=p.final_div_factor,
    )


if TYPE_CHECKING:
    SchedulerSpec = KindSpec
else:
    SchedulerSpec = tagged_union(SCHEDULERS, "kind")


def build_scheduler(spec: Any, opt: torch.optim.Optimizer, horizon: Horizon) -> LRScheduler:
    return SCHEDULERS[spec.kind].build(spec, opt, horizon)


def steps_per_batch(spec: Any) -> bool:
    return bool(SCHEDULERS[spec.kind].info["per_batch"])
