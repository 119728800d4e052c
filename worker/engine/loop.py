"""The training loop: per epoch a ``train`` pass (train mode), a ``train_eval`` pass (eval mode
over the training set) and a ``val`` pass; ``test`` once at the end, on the best weights.

The loop is a plain function. It reports each epoch through ``hooks.on_epoch`` before
starting the next, polls ``hooks.should_stop`` between batches (cancel or drain), hands a
resumable state to ``hooks.on_checkpoint`` and can start from ``hooks.resume``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from models import BuildContext, build_model
from trainrun.datasets import SplitArrays
from trainrun.objectives import Objective, bind_objective
from trainrun.optim import build_optimizer
from trainrun.planning import check_loss
from trainrun.schedules import Horizon, build_scheduler, steps_per_batch
from trainrun.spec import JobSpec
from worker.engine import state as run_state
from worker.engine.data import BatchSource, DeviceSplit, free_device_bytes
from worker.engine.early_stopping import EarlyStopper
from worker.engine.metrics import PhaseStats
from worker.engine.tuning import (
    Tuning,
    autocast_dtype,
    compile_forward,
    configure_cpu_threads,
    eval_batch_size,
    eval_cpu_threads,
    forward_flops,
    should_compile,
    use_channels_last,
    use_rand_dropout,
)

__all__ = ["configure_cpu_threads", "evaluate", "train"]

log = logging.getLogger(__name__)
Figures = dict[str, dict[str, Any]]  # phase -> stored statistics
EpochHook = Callable[[int, Figures], None]
Forward = Callable[[Tensor], Tensor]


class Stopped(Exception):
    """The loop stopped between batches because ``should_stop`` said so."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobFailure(Exception):
    """The job cannot go on; the message tells the user what to change."""


def _never() -> str | None:
    return None


@dataclass
class Hooks:
    on_epoch: EpochHook
    should_stop: Callable[[], str | None] = _never
    on_checkpoint: Callable[[run_state.TrainState], None] | None = None
    resume: run_state.TrainState | None = None


@dataclass
class TrainResult:
    epochs_run: int
    final: Figures
    model: nn.Module
    input_shape: tuple[int, ...]
    output_width: int
    best_epoch: int | None = None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


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


def penalty_value(model: nn.Module, l1: float, l2: float) -> Tensor | float:
    """The penalty of the current weights, as recorded for the eval-mode phases (kept on the
    device: it reaches the host with the phase's other sums, not in a sync of its own)."""
    with torch.no_grad():
        return penalty_term(model, l1, l2)


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


def _check_stop(should_stop: Callable[[], str | None]) -> None:
    reason = should_stop()
    if reason:
        raise Stopped(reason)


def _forward(forward: Forward, x: Tensor, tuning: Tuning | None) -> Tensor:
    """The model's output in fp32: autocast covers the network, never the loss (bce is unsafe
    under autocast) nor the statistics."""
    if tuning is None:
        return forward(x)
    if tuning.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with tuning.forward_context(x.device):
        out = forward(x)
    return out.float()


def evaluate(
    model: nn.Module,
    table: BatchSource,
    objective: Objective,
    batch_size: int,
    penalty: Tensor | float,
    should_stop: Callable[[], str | None],
    tuning: Tuning | None = None,
    forward: Forward | None = None,
) -> PhaseStats:
    """One eval-mode pass (dropout off, BatchNorm on running statistics)."""
    model.eval()
    stats = PhaseStats(objective.task, table.device, objective.threshold)
    threads = tuning.eval_threads_context() if tuning is not None else contextlib.nullcontext()
    with torch.inference_mode(), threads:
        for x, y in table.batches(batch_size, None):
            _check_stop(should_stop)
            out = _forward(forward or model, x, tuning)
            stats.add(out, y, _data_term(objective, out, y), penalty)
    return stats


def _finite_or_fail(epoch: int, phase: str, row: dict[str, Any]) -> None:
    if not math.isfinite(row["loss_sum"]):
        raise JobFailure(
            f"diverged: the {phase} loss is {row['loss_sum']} at epoch {epoch}; "
            "lower the learning rate or check the inputs"
        )


def _train_eval_rows(spec: JobSpec, table: BatchSource) -> BatchSource:
    subset = spec.evaluation.train_eval.subset
    if subset is None or subset >= len(table):
        return table
    g = torch.Generator(device="cpu").manual_seed(spec.seed + 1)
    idx = torch.randperm(len(table), generator=g)[:subset].sort().values.to(table.device)
    return table.take(idx)


def plan_tuning(
    spec: JobSpec, device: torch.device, model: nn.Module, arrays: SplitArrays, batches: int
) -> Tuning:
    """The speed choices for this job on this device (see ``worker.engine.tuning``)."""
    res = spec.resources
    x = arrays.train.x
    sample_bytes = int(x.itemsize * math.prod(arrays.train.sample_shape))
    eval_batch = eval_batch_size(
        spec.evaluation.eval_batch_size,
        device,
        spec.training.batch_size,
        sample_bytes,
        free_device_bytes(device),
    )
    tuning = Tuning(eval_batch)
    tuning.autocast, note = autocast_dtype(res.precision, device)
    tuning.notes += [note] if note else []
    tuning.channels_last, note = use_channels_last(
        res.channels_last, device, arrays.train.sample_shape, model
    )
    tuning.notes += [note] if note else []
    eval_rows = len(arrays.train) + len(arrays.val)
    steps = spec.training.epochs * (batches + math.ceil(eval_rows / eval_batch))
    tuning.compiled = should_compile(res.compile, device, steps)
    return tuning


def train(
    spec: JobSpec, arrays: SplitArrays, hooks: Hooks, *, stream_chunk_rows: int | None = None
) -> TrainResult:
    """Train ``spec`` on ``arrays``; ``stream_chunk_rows`` forces the streamed data path."""
    device = resolve_device(spec.resources.device)
    torch.manual_seed(spec.seed)
    widths = check_loss(spec, arrays.train)
    context = BuildContext(arrays.train.sample_shape, widths[0])
    with torch.device(device):
        built = build_model(spec.model, context)
    model = built.module
    objective = bind_objective(spec.loss, arrays.train, built.output_shape[0])
    cfg = spec.training
    batches = math.ceil(len(arrays.train) / cfg.batch_size)
    tuning = plan_tuning(spec, device, model, arrays, batches)
    if device.type == "cpu":
        flops = forward_flops(model, torch.from_numpy(arrays.train.x[:1]), cfg.batch_size)
        tuning.threads = configure_cpu_threads(spec.resources.cpu_threads, flops)
        tuning.eval_threads = eval_cpu_threads(spec.resources.cpu_threads, tuning.threads)
    tuning.rand_dropout = use_rand_dropout(model, device)
    if tuning.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for note in tuning.notes:
        log.info("%s", note)
    optimizer = build_optimizer(spec.optimizer, model.parameters())
    forward: Forward = compile_forward(model) if tuning.compiled else model
    data = DeviceSplit.from_arrays(arrays, device, stream_chunk_rows)
    scheduler = (
        build_scheduler(spec.scheduler, optimizer, Horizon(cfg.epochs, batches))
        if spec.scheduler is not None
        else None
    )
    per_batch_schedule = spec.scheduler is not None and steps_per_batch(spec.scheduler)
    stopper = EarlyStopper(cfg.early_stopping) if cfg.early_stopping is not None else None
    order_gen = torch.Generator(device=device).manual_seed(spec.seed)
    train_eval_rows = _train_eval_rows(spec, data.train)
    reg = spec.regularization
    eval_batch = tuning.eval_batch

    start = 1
    if hooks.resume is not None:
        run_state.restore(hooks.resume, model, optimizer, scheduler, order_gen, stopper, device)
        start = hooks.resume.epoch + 1

    def checkpoint(epoch: int) -> None:
        if hooks.on_checkpoint is not None:
            hooks.on_checkpoint(
                run_state.capture(epoch, model, optimizer, scheduler, order_gen, stopper)
            )

    figures: Figures = {}
    epoch = start - 1
    stopped_early = False
    for epoch in range(start, cfg.epochs + 1):
        figures = {}
        # -- train: train mode, figures as the optimisation loop saw them
        t0 = time.perf_counter()
        model.train()
        stats = PhaseStats(objective.task, device, objective.threshold)
        n = len(data.train)
        order = torch.randperm(n, generator=order_gen, device=device) if cfg.shuffle else None
        for x, y in data.train.batches(cfg.batch_size, order):
            _check_stop(hooks.should_stop)
            out = _forward(forward, x, tuning)
            data_term = _data_term(objective, out, y)
            penalty = penalty_term(model, reg.l1, reg.l2)
            loss = data_term.mean() + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip.max_norm, foreach=True)
            optimizer.step()
            if per_batch_schedule:
                assert scheduler is not None
                scheduler.step()
            stats.add(out, y, data_term, penalty)
        figures["train"] = stats.figures(time.perf_counter() - t0)
        _finite_or_fail(epoch, "train", figures["train"])

        # -- eval mode: the training set (every k epochs, or a subset) and validation
        current_penalty = penalty_value(model, reg.l1, reg.l2)
        phases: list[tuple[str, BatchSource]] = []
        if (epoch - 1) % spec.evaluation.train_eval.every == 0 or epoch == cfg.epochs:
            phases.append(("train_eval", train_eval_rows))
        phases.append(("val", data.val))
        for phase, table in phases:
            t0 = time.perf_counter()
            stats = evaluate(
                model,
                table,
                objective,
                eval_batch,
                current_penalty,
                hooks.should_stop,
                tuning,
                forward,
            )
            figures[phase] = stats.figures(time.perf_counter() - t0)
            _finite_or_fail(epoch, phase, figures[phase])
        hooks.on_epoch(epoch, figures)

        if scheduler is not None and not per_batch_schedule:
            scheduler.step()
        stopped_early = stopper is not None and stopper.update(epoch, figures, model)
        if stopped_early or epoch % cfg.checkpoint_every == 0:
            checkpoint(epoch)
        if stopped_early:
            break

    best_epoch = stopper.best_epoch if stopper is not None else None
    if stopper is not None and stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    if data.test is not None:
        t0 = time.perf_counter()
        test_penalty = penalty_value(model, reg.l1, reg.l2)
        stats = evaluate(
            model,
            data.test,
            objective,
            eval_batch,
            test_penalty,
            hooks.should_stop,
            tuning,
            forward,
        )
        test = {"test": stats.figures(time.perf_counter() - t0)}
        hooks.on_epoch(best_epoch or epoch, test)
        figures.update(test)
    return TrainResult(
        epoch,
        figures,
        model,
        arrays.train.sample_shape,
        built.output_shape[0],
        best_epoch,
        stopped_early,
        {"tuning": tuning.summary()},
    )
