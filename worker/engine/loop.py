"""The training loop: per epoch a ``train`` pass (train mode), a ``train_eval`` pass (eval mode
over the training set) and a ``val`` pass; ``test`` once at the end.

The loop is a plain function. It reports each epoch through ``on_epoch`` before starting the
next, and polls ``should_stop`` between batches (cancel or drain).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models import BuildContext, build_model
from trainrun.datasets import SplitArrays
from trainrun.objectives import Objective, bind_objective
from trainrun.optim import build_optimizer
from trainrun.planning import check_loss
from trainrun.spec import JobSpec
from worker.engine.data import DeviceSplit, DeviceTable, batch_indices
from worker.engine.metrics import PhaseStats

Figures = dict[str, dict[str, Any]]  # phase -> stored statistics
EpochHook = Callable[[int, Figures], None]
AUTO_EVAL_BATCH = 8192


class Stopped(Exception):
    """The loop stopped between batches because ``should_stop`` said so."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobFailure(Exception):
    """The job cannot go on; the message tells the user what to change."""


@dataclass
class TrainResult:
    epochs_run: int
    final: Figures
    model: nn.Module


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise JobFailure("the spec asks for device 'cuda' but this worker has no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def penalty_term(model: nn.Module, l1: float, l2: float) -> Tensor | float:
    """l1·Σ|w| + l2·Σw² over weight matrices and kernels (biases and norm scales excluded)."""
    if l1 == 0 and l2 == 0:
        return 0.0
    weights = [p for p in model.parameters() if p.dim() > 1]
    total: Tensor | float = 0.0
    if l1:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        total = total + l2 * sum((w * w).sum() for w in weights)
    return total


def _data_term(objective: Objective, out: Tensor, y: Tensor) -> Tensor:
    try:
        return objective.per_sample(out, y)
    except RuntimeError as exc:
        if objective.probabilities and "between 0 and 1" in str(exc):
            raise JobFailure(
                f"loss '{objective.name}' takes probabilities in [0, 1], but the model output "
                "values outside that range; end the model with sigmoid or hardsigmoid, or use "
                "bce_with_logits on raw scores"
            ) from None
        raise


def evaluate(
    model: nn.Module,
    table: DeviceTable,
    objective: Objective,
    batch_size: int,
    penalty: float,
    should_stop: Callable[[], str | None],
) -> PhaseStats:
    """One eval-mode pass (dropout off, BatchNorm on running statistics)."""
    model.eval()
    stats = PhaseStats(objective.task, table.x.device, objective.threshold)
    with torch.inference_mode():
        for idx in batch_indices(len(table), batch_size, None):
            _check_stop(should_stop)
            x, y = table.x[idx], table.y[idx]
            out = model(x)
            stats.add(out, y, _data_term(objective, out, y), penalty)
    return stats


def _check_stop(should_stop: Callable[[], str | None]) -> None:
    reason = should_stop()
    if reason:
        raise Stopped(reason)


def _finite_or_fail(epoch: int, phase: str, row: dict[str, Any]) -> None:
    if not math.isfinite(row["loss_sum"]):
        raise JobFailure(
            f"diverged: the {phase} loss is {row['loss_sum']} at epoch {epoch}; "
            "lower the learning rate or check the inputs"
        )


def _train_eval_rows(spec: JobSpec, table: DeviceTable) -> DeviceTable:
    subset = spec.evaluation.train_eval.subset
    if subset is None or subset >= len(table):
        return table
    g = torch.Generator(device="cpu").manual_seed(spec.seed + 1)
    idx = torch.randperm(len(table), generator=g)[:subset].sort().values.to(table.x.device)
    return table.take(idx)


def train(
    spec: JobSpec,
    arrays: SplitArrays,
    on_epoch: EpochHook,
    should_stop: Callable[[], str | None] = lambda: None,
) -> TrainResult:
    device = resolve_device(spec.resources.device)
    torch.manual_seed(spec.seed)
    widths = check_loss(spec, arrays.train)
    with torch.device(device):
        built = build_model(spec.model, BuildContext(arrays.train.sample_shape, widths[0]))
    model = built.module
    objective = bind_objective(spec.loss, arrays.train, built.output_shape[0])
    optimizer = build_optimizer(spec.optimizer, model.parameters())
    data = DeviceSplit.from_arrays(arrays, device)
    train_eval_rows = _train_eval_rows(spec, data.train)
    reg = spec.regularization
    eval_bs = spec.evaluation.eval_batch_size
    eval_batch = max(spec.training.batch_size, AUTO_EVAL_BATCH) if eval_bs == "auto" else eval_bs
    order_gen = torch.Generator(device=device).manual_seed(spec.seed)

    figures: Figures = {}
    epoch = 0
    for epoch in range(1, spec.training.epochs + 1):
        figures = {}
        # -- train: train mode, figures as the optimisation loop saw them
        t0 = time.perf_counter()
        model.train()
        stats = PhaseStats(objective.task, device, objective.threshold)
        n = len(data.train)
        order = (
            torch.randperm(n, generator=order_gen, device=device) if spec.training.shuffle else None
        )
        for idx in batch_indices(n, spec.training.batch_size, order):
            _check_stop(should_stop)
            x, y = data.train.x[idx], data.train.y[idx]
            out = model(x)
            data_term = _data_term(objective, out, y)
            penalty = penalty_term(model, reg.l1, reg.l2)
            loss = data_term.mean() + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            stats.add(out, y, data_term, penalty)
        figures["train"] = stats.figures(time.perf_counter() - t0)
        _finite_or_fail(epoch, "train", figures["train"])

        current_penalty = float(penalty_term(model, reg.l1, reg.l2))
        phases: list[tuple[str, DeviceTable]] = []
        if (epoch - 1) % spec.evaluation.train_eval.every == 0 or epoch == spec.training.epochs:
            phases.append(("train_eval", train_eval_rows))
        phases.append(("val", data.val))
        for phase, table in phases:
            t0 = time.perf_counter()
            stats = evaluate(model, table, objective, eval_batch, current_penalty, should_stop)
            figures[phase] = stats.figures(time.perf_counter() - t0)
            _finite_or_fail(epoch, phase, figures[phase])
        on_epoch(epoch, figures)

    if data.test is not None:
        t0 = time.perf_counter()
        current_penalty = float(penalty_term(model, reg.l1, reg.l2))
        stats = evaluate(model, data.test, objective, eval_batch, current_penalty, should_stop)
        test = {"test": stats.figures(time.perf_counter() - t0)}
        on_epoch(epoch, test)
        figures.update(test)
    return TrainResult(epoch, figures, model)
