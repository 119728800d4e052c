"""Speed choices made once per job from the spec and the machine: threads, eval batch size,
precision, memory format, compilation and the CPU dropout kernel. Each is a small pure
function, so a CPU test can check the decision even where the fast path (CUDA) cannot run."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

# A CPU training step runs on one thread unless its forward pass does at least this many
# FLOPs (matmuls and convolutions) per batch: below that, per-op overhead dominates and extra
# threads only add to it. Parameters are the wrong measure: seed 000's conv net has 1,266 of
# them and 14 MFLOP per batch of 256. Measured on 2 idle cores (bench/RESULTS.md, "CPU
# threads"): digits MLP, 1.2 MFLOP, 1.4x slower with 2 threads; seed 000, 14 MFLOP, 1.3x faster.
PARALLEL_MIN_FLOPS = 8_000_000
# Eval batches on the CPU: large enough to amortise per-op overhead, small enough for the
# activations to stay in cache (measured: 1024 rows beat 8192 by 1.3-2x for seed 000's conv net
# and for an MLP on 800k rows).
CPU_EVAL_BATCH = 1024
# On CUDA: the share of free memory an eval batch's activations may take, a bound on those
# activations per input byte for the zoo's networks, and a ceiling where returns vanish.
EVAL_MEMORY_FRACTION = 0.25
ACTIVATION_PER_INPUT_BYTE = 64
MAX_EVAL_BATCH = 65_536
# torch.compile costs tens of seconds up front and saves a fraction of a millisecond per step
# for the networks trainrun builds: it repays itself only over this many steps.
COMPILE_MIN_STEPS = 20_000


def available_cpus() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _layer_flops(module: nn.Module, out: torch.Tensor) -> int:
    """2·multiply-adds of one Linear or Conv layer's forward pass (0 for any other layer)."""
    if isinstance(module, nn.Linear):
        return 2 * out.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * out.numel() * per_output
    return 0


def forward_flops(model: nn.Module, sample: torch.Tensor, batch: int) -> int | None:
    """Matmul and convolution FLOPs of one forward pass over ``batch`` rows, from one pass over
    ``sample`` (a row or a few) in eval mode under ``inference_mode``, counted by forward
    hooks on the Linear and Conv layers: no random draws, no BatchNorm update, well under a
    millisecond for the models this is asked about. None if the pass fails."""
    total = 0

    def count(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        nonlocal total
        total += _layer_flops(module, out)

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(sample)
    except (NotImplementedError, RuntimeError) as exc:
        log.warning("could not count the model's FLOPs: %s", exc)
        return None
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total * batch // max(1, len(sample))


def configure_cpu_threads(requested: int | str, flops: int | None) -> int:
    """Set torch's intra-op threads for this process's training steps; returns the count.
    ``flops``: of one training batch's forward pass (``forward_flops``; None: unknown)."""
    if isinstance(requested, int):
        threads = requested
    else:
        big = flops is not None and flops >= PARALLEL_MIN_FLOPS
        threads = available_cpus() if big else 1
    torch.set_num_threads(threads)
    return threads


def eval_cpu_threads(requested: int | str, train_threads: int) -> int:
    """Threads for the eval passes. Their batches are 4x the training batch or more and carry
    no autograd, so their ops are big enough to split: ``auto`` gives them every core even
    when the small model's training steps run on one (seed 000's eval passes: 13.6 -> 7.2 ms
    on 2 cores, bench/RESULTS.md). A number in the spec holds for both."""
    if isinstance(requested, int):
        return requested
    return max(train_threads, available_cpus())


def eval_batch_size(
    requested: int | str,
    device: torch.device,
    train_batch: int,
    sample_bytes: int,
    free_bytes: int | None,
) -> int:
    """Rows per eval batch: the spec's number, or one sized to the device's free memory."""
    if isinstance(requested, int):
        return requested
    if device.type != "cuda" or free_bytes is None:
        return max(train_batch, CPU_EVAL_BATCH)
    rows = int(EVAL_MEMORY_FRACTION * free_bytes) // max(
        1, sample_bytes * ACTIVATION_PER_INPUT_BYTE
    )
    return max(train_batch, min(rows, MAX_EVAL_BATCH))


def autocast_dtype(requested: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for ``precision`` on ``device`` (None: fp32), and a note if downgraded."""
    if requested != "bf16":
        return None, None
    if device.type != "cuda":
        return None, "precision bf16 asked for, but the job ran on the CPU: trained in fp32"
    if not torch.cuda.is_bf16_supported():
        return None, "precision bf16 asked for, but this GPU lacks bf16: trained in fp32"
    return torch.bfloat16, None


def use_channels_last(
    requested: str, device: torch.device, sample_shape: tuple[int, ...], model: nn.Module
) -> tuple[bool, str | None]:
    """channels_last for 4-d (N, C, H, W) inputs to a conv net: always on request, on CUDA by
    default (tensor cores want NHWC), never for other input shapes."""
    if requested == "off":
        return False, None
    if len(sample_shape) != 3:
        ignored = "channels_last applies to 4-d conv inputs only: ignored"
        return False, ignored if requested == "on" else None
    if requested == "on":
        return True, None
    has_conv2d = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return device.type == "cuda" and has_conv2d, None


class RandDropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn by ``rand_like >= p``: the same distribution and
    scaling, 2-4x faster on the CPU than the ``bernoulli_`` that ``F.dropout`` uses (measured on
    seed 000's (256, 4, 141) activations), where dropout was a quarter of the step time."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return input
        if self.p == 1.0:
            return input.mul_(0.0) if self.inplace else torch.zeros_like(input)
        # The mask made in place in the uniform draw's own buffer: 1/(1-p) where kept, else 0;
        # one multiply forward and one backward (bitwise the result of ``x * keep * scale``).
        mask = torch.rand_like(input).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return input.mul_(mask) if self.inplace else input * mask


def use_rand_dropout(model: nn.Module, device: torch.device) -> int:
    """On the CPU, switch plain ``nn.Dropout`` layers to ``RandDropout`` in place (no state
    changes: dropout has none); returns how many were switched."""
    if device.type != "cpu":
        return 0  # CUDA's fused dropout kernel is already fast
    switched = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = RandDropout
            switched += 1
    return switched


def should_compile(requested: str, device: torch.device, steps: int) -> bool:
    """torch.compile on request, or on CUDA for jobs long enough to repay the compile time."""
    if requested != "auto":
        return requested == "on"
    return device.type == "cuda" and steps >= COMPILE_MIN_STEPS


@dataclass
class Tuning:
    """What the engine chose for one job; ``notes`` go to the log and the result's extra."""

    eval_batch: int
    autocast: torch.dtype | None = None
    channels_last: bool = False
    compiled: bool = False
    threads: int | None = None
    eval_threads: int | None = None
    rand_dropout: int = 0
    notes: list[str] = field(default_factory=list)

    def forward_context(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)

    @contextlib.contextmanager
    def eval_threads_context(self) -> Iterator[None]:
        """torch's intra-op threads set to ``eval_threads`` for one eval pass, then restored."""
        if self.eval_threads is None or self.eval_threads == torch.get_num_threads():
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.eval_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def summary(self) -> dict[str, Any]:
        return {
            "eval_batch": self.eval_batch,
            "precision": "bf16" if self.autocast is torch.bfloat16 else "fp32",
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "cpu_threads": self.threads,
            "cpu_eval_threads": self.eval_threads,
            "rand_dropout_layers": self.rand_dropout,
            "notes": list(self.notes),
        }


def compile_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    """A compiled forward sharing ``model``'s parameters (state dicts stay unprefixed)."""
    return torch.compile(model)
