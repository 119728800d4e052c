"""The baseline: a plain PyTorch loop written the way seed 000's article writes it.

A ``DataLoader`` over a ``TensorDataset`` (per-sample indexing, default collate), batch 256,
separate ``train`` / ``train_eval`` / ``val`` passes at the same batch size, accuracy by
argmax, loss and accuracy averaged per batch. Two deliberate departures from the article,
so that both loops train the same model the same way: gradients are zeroed every step (the
article never zeroes them) and the training set is shuffled each epoch (the engine does).
The model, split and optimizer come from the same spec as the engine's run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from models import BuildContext, build_model
from trainrun.datasets import SplitArrays
from trainrun.optim import build_optimizer
from trainrun.planning import check_loss
from trainrun.spec import JobSpec


@dataclass
class BaselineResult:
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: figures, seconds

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """The article's accuracy: argmax hits over the batch (ties go to the first index)."""
    return (logits.max(dim=1).indices == target).sum() / logits.shape[0]


def _loss_fn(spec: JobSpec, width: int) -> tuple[nn.Module, bool]:
    """The torch loss and whether it takes one-hot float targets (the article's BCELoss)."""
    if spec.loss.kind == "bce":
        return nn.BCELoss(), True
    if spec.loss.kind == "cross_entropy":
        return nn.CrossEntropyLoss(), False
    raise ValueError(f"baseline covers bce and cross_entropy, not {spec.loss.kind}")


def run_pass(
    loader: DataLoader[tuple[Tensor, ...]],
    model: nn.Module,
    loss_func: nn.Module,
    optimizer: torch.optim.Optimizer,
    eval_mode: bool = False,
) -> tuple[float, float]:
    """The article's ``train()``: one pass, per-batch averages of loss and accuracy."""
    if eval_mode:
        model.eval()
    else:
        model.train()
    ave_loss: Tensor | float = 0.0
    ave_acc: Tensor | float = 0.0
    num_batch = 0
    for x, target, label in loader:
        out = model(x)
        loss = loss_func(out, target)
        acc = accuracy(out, label)
        if not eval_mode:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ave_loss = ave_loss + loss.detach()
        ave_acc = ave_acc + acc
        num_batch += 1
    if eval_mode:
        model.train()
    return float(ave_loss) / num_batch, float(ave_acc) / num_batch


def train_baseline(
    spec: JobSpec, arrays: SplitArrays, threads: int | None = None
) -> BaselineResult:
    """Train ``spec`` on ``arrays`` with the article's loop, on the CPU."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    widths = check_loss(spec, arrays.train)
    model = build_model(spec.model, BuildContext(arrays.train.sample_shape, widths[0])).module
    optimizer = build_optimizer(spec.optimizer, model.parameters())
    loss_func, one_hot = _loss_fn(spec, widths[0])
    batch = spec.training.batch_size

    def dataset(table: object) -> TensorDataset:
        x = torch.tensor(table.x)  # type: ignore[attr-defined]
        label = torch.tensor(table.y)  # type: ignore[attr-defined]
        target = nn.functional.one_hot(label, widths[0]).float() if one_hot else label
        return TensorDataset(x, target, label)

    train_set, val_set = dataset(arrays.train), dataset(arrays.val)
    shuffle_gen = torch.Generator().manual_seed(spec.seed)
    loader_train = DataLoader(train_set, batch_size=batch, shuffle=True, generator=shuffle_gen)
    loader_train_eval = DataLoader(train_set, batch_size=batch)
    loader_valid = DataLoader(val_set, batch_size=batch)
    result = BaselineResult()
    for _ in range(spec.training.epochs):
        t0 = time.perf_counter()
        loss_train, acc_train = run_pass(loader_train, model, loss_func, optimizer)
        t1 = time.perf_counter()
        loss_te, acc_te = run_pass(loader_train_eval, model, loss_func, optimizer, eval_mode=True)
        loss_val, acc_val = run_pass(loader_valid, model, loss_func, optimizer, eval_mode=True)
        t2 = time.perf_counter()
        result.history.append(
            {
                "train_loss": loss_train,
                "train_acc": acc_train,
                "train_eval_loss": loss_te,
                "train_eval_acc": acc_te,
                "val_loss": loss_val,
                "val_acc": acc_val,
                "train_seconds": t1 - t0,
                "eval_seconds": t2 - t1,
            }
        )
    return result
