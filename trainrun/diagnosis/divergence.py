"""Finding ``diverged``: the loss stopped being a finite number."""

from __future__ import annotations

import itertools
import re
from typing import Any

from trainrun.diagnosis.schema import Finding
from trainrun.diagnosis.series import EVAL_PHASES, Run, fmt, num, span
from trainrun.diagnosis.thresholds import LAST_EPOCHS

# The loop's message: "diverged: the <phase> loss is <value> at epoch <N>; ..."
_DIVERGED = re.compile(r"diverged: the (\w+) loss is (\S+) at epoch (\d+)")
_PHASES = ("train", *EVAL_PHASES)


def _where(run: Run) -> tuple[str | None, str, int] | None:
    """(phase, value, epoch) of the blow-up: from the job's error, else the first bad figure."""
    m = _DIVERGED.search(run.error) if run.error else None
    if m:
        return m.group(1), m.group(2), int(m.group(3))
    bad = [(e, ph) for ph in _PHASES for e, p in run.series(ph).items() if not p.finite]
    if not bad:
        return None
    epoch, phase = min(bad, key=lambda b: (b[0], _PHASES.index(b[1])))
    return phase, "not finite", epoch


def diverged(run: Run) -> Finding | None:
    where = _where(run)
    if where is None:
        return None
    phase, value, epoch = where
    before = sorted(e for e in run.finite("train") if e < epoch)[-LAST_EPOCHS:]
    losses = run.values("train", before, "loss")
    lr = getattr(run.spec.optimizer, "lr", None)
    figures: dict[str, Any] = {
        "phase": phase,
        "value": value,
        "epoch": epoch,
        "train_loss_before": [num(x) for x in losses],
        "lr": num(lr) if isinstance(lr, int | float) else None,
    }
    trend = ""
    if len(losses) >= 2:
        rising = all(b > a for a, b in itertools.pairwise(losses))
        trend = (
            f" The train loss was already rising before it ({', '.join(fmt(x) for x in losses)} "
            f"over {span(before)}), the usual sign of a step size too large."
            if rising
            else f" The last finite train losses were {', '.join(fmt(x) for x in losses)} "
            f"({span(before)}), so the blow-up came suddenly: look for extreme or missing "
            "values in the inputs."
        )
    lr_text = f" (the optimizer's lr is {lr:g})" if isinstance(lr, int | float) else ""
    message = (
        f"Training diverged: the {phase} loss became {value} at epoch {epoch} and the job "
        f"{'stopped' if run.status != 'running' else 'is stopping'} there; figures after that "
        f"point would be meaningless.{trend} Lower the learning rate{lr_text}, standardise "
        "the inputs (data.standardize: true), or clip gradients."
    )
    return Finding(
        "diverged",
        "error",
        f"diverged: {phase} loss {value} at epoch {epoch}",
        message,
        (*before, epoch),
        figures,
    )
