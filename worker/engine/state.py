"""Everything needed to resume a run exactly: weights, optimizer, scheduler, RNG, early stopping.

Tensors and JSON-able metadata are kept apart so the checkpoint can be one safetensors file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from worker.engine.early_stopping import EarlyStopper


@dataclass
class TrainState:
    tensors: dict[str, Tensor]
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


def capture(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    order_gen: torch.Generator,
    stopper: EarlyStopper | None,
) -> TrainState:
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in opt["state"].items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    tensors["rng.order"] = order_gen.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if stopper is not None and stopper.best_weights is not None:
        tensors.update({f"best.{k}": v for k, v in stopper.best_weights.items()})
    meta = {
        "epoch": epoch,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "early_stopping": stopper.state() if stopper is not None else None,
    }
    return TrainState(tensors, meta)


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def restore(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None,
    order_gen: torch.Generator,
    stopper: EarlyStopper | None,
    device: torch.device,
) -> None:
    t = state.tensors
    model.load_state_dict(_prefixed(t, "model."))
    slots: dict[int, dict[str, Any]] = {}
    for key, value in _prefixed(t, "optim.").items():
        idx, name = key.split(".", 1)
        slots.setdefault(int(idx), {})[name] = value.to(device)
    for idx, scalars in state.meta["optim_scalars"].items():
        slots.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": slots, "param_groups": state.meta["param_groups"]})
    if scheduler is not None and state.meta["scheduler"] is not None:
        scheduler.load_state_dict(state.meta["scheduler"])
    torch.set_rng_state(t["rng.cpu"].to("cpu"))
    order_gen.set_state(t["rng.order"].to("cpu"))
    if "rng.cuda" in t and device.type == "cuda":
        torch.cuda.set_rng_state(t["rng.cuda"].to("cpu"))
    if stopper is not None and state.meta["early_stopping"] is not None:
        best = _prefixed(t, "best.") or None
        best = {k: v.to(device) for k, v in best.items()} if best else None
        stopper.load_state(state.meta["early_stopping"], best)
