"""The optimizer catalogue: params schema plus a builder over a module's parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from trainrun.catalog import Catalog, KindSpec, Params, tagged_union


def fast_step(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """Fused kernels when every parameter is a floating-point CUDA tensor, else foreach."""
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {"foreach": True}


OptimizerBuilder = Callable[[Any, Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
OPTIMIZERS: Catalog[OptimizerBuilder] = Catalog("optimizer")


class SgdParams(Params):
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0, description="decoupled from the loss")


@OPTIMIZERS.register("sgd", SgdParams)
def _sgd(p: SgdParams, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Stochastic gradient descent, with optional (Nesterov) momentum."""
    params = list(params)
    return torch.optim.SGD(
        params,
        lr=p.lr,
        momentum=p.momentum,
        nesterov=p.nesterov,
        weight_decay=p.weight_decay,
        **fast_step(params),
    )


class AdamParams(Params):
    lr: float = Field(default=1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)


@OPTIMIZERS.register("adam", AdamParams)
def _adam(p: AdamParams, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam; ``weight_decay`` here is the coupled (L2-in-gradient) form, as torch defines it."""
    params = list(params)
    return torch.optim.Adam(
        params,
        lr=p.lr,
        betas=p.betas,
        eps=p.eps,
        weight_decay=p.weight_decay,
        **fast_step(params),
    )


@OPTIMIZERS.register("adamw", AdamParams)
def _adamw(p: AdamParams, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay."""
    params = list(params)
    return torch.optim.AdamW(
        params,
        lr=p.lr,
        betas=p.betas,
        eps=p.eps,
        weight_decay=p.weight_decay,
        **fast_step(params),
    )


if TYPE_CHECKING:
    OptimizerSpec = KindSpec
else:
    OptimizerSpec = tagged_union(OPTIMIZERS, "kind")


def build_optimizer(spec: Any, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return OPTIMIZERS[spec.kind].build(spec, params)
