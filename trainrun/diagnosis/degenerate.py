"""Finding ``degenerate_predictions``: outputs tied across classes, or one class for every input."""

from __future__ import annotations

from typing import Any

from trainrun.diagnosis.baselines import class_priors
from trainrun.diagnosis.layers import final_activation
from trainrun.diagnosis.schema import Finding
from trainrun.diagnosis.series import EVAL_PHASES, Run, fmt, num, span
from trainrun.diagnosis.thresholds import CONSTANT_TIE_RATE, LAST_EPOCHS, TIE_RATE_HIGH
from trainrun.spec import JobSpec

CLIPPING_ACTIVATIONS = ("relu", "hardsigmoid")  # can output exactly equal values: ties


def degenerate(run: Run) -> Finding | None:
    if run.task != "classification":
        return None
    latest = max((e for ph in EVAL_PHASES for e in run.series(ph)), default=None)
    if latest is None:
        return None
    now = {
        ph: p for ph in EVAL_PHASES if (p := run.at(ph, latest)) and p.get("tie_rate") is not None
    }
    if not now:
        return None
    # On equal tie rates name val first: it is the figure people read.
    worst_phase = max(now, key=lambda ph: (now[ph].tie_rate or 0.0, ph == "val"))
    worst = now[worst_phase].tie_rate or 0.0
    priors, _ = class_priors(run)
    k = len(priors.train) if priors else None
    constant_class = None if worst > TIE_RATE_HIGH else _constant_class(run)
    if worst <= TIE_RATE_HIGH and constant_class is None:
        return None
    tied_epochs = sorted(
        e for e, p in run.series("val").items() if (p.tie_rate or 0.0) > TIE_RATE_HIGH
    )
    figures: dict[str, Any] = {f"{ph}_tie_rate": num(p.tie_rate) for ph, p in now.items()} | {
        f"{ph}_accuracy": num(p.accuracy) for ph, p in now.items()
    }
    figures["chance_accuracy"] = num(1.0 / k) if k else None
    constant = worst >= CONSTANT_TIE_RATE
    acc = now[worst_phase].accuracy
    if constant_class is not None:
        c, epochs = constant_class
        figures["constant_class"] = c
        text = (
            f"The val accuracy has been exactly {fmt(run.series('val')[epochs[-1]].accuracy)} "
            f"over {span(epochs)}, the share of class {c} in the validation split: the model "
            f"predicts class {c} for every sample, whatever the input."
        )
        tied_epochs = epochs
    else:
        state = "a constant output" if constant else "mostly tied outputs"
        text = (
            f"At epoch {latest}, {worst:.0%} of the {worst_phase} samples had their top score "
            f"shared by several classes ({state}). trainrun's accuracy gives a k-way tie 1/k "
            f"credit, the expected accuracy of a random tie-break, so the {worst_phase} accuracy "
            f"shown ({fmt(acc)}) is chance"
            + (f" (1/{k} = {fmt(1.0 / k)})" if constant and k else "")
            + ", not skill; an accuracy that counts ties as hits would report close to 100% "
            "here (seed 002)."
        )
    hint = _activation_hint(run.spec, figures)
    return Finding(
        "degenerate_predictions",
        "error",
        f"degenerate predictions: {worst_phase} tie rate {worst:.0%} at epoch {latest}"
        if constant_class is None
        else f"degenerate predictions: always class {constant_class[0]}",
        text + hint,
        tuple(tied_epochs) or (latest,),
        figures,
    )


def _activation_hint(spec: JobSpec, figures: dict[str, Any]) -> str:
    """A sentence on the final activation, if the model has one; records it in ``figures``."""
    act = final_activation(spec)
    if act is None:
        return ""
    path, name = act
    figures["final_activation"] = f"{path}: {name}"
    if name not in CLIPPING_ACTIVATIONS:
        return (
            f" The model ends with {name} at {path}; it can saturate to equal values, so "
            "check whether the loss wants raw scores instead."
        )
    why = (
        "clips every negative score to exactly 0, so once the scores go negative all "
        "outputs are equal. Remove it: cross_entropy and bce_with_logits take raw scores"
        if name == "relu"
        else "saturates at exactly 0 and 1, so saturated outputs are equal. Drop it and "
        "use bce_with_logits on the raw scores"
    )
    return f" The model ends with {name} at {path} after its last weight layer: it {why}."


def _constant_class(run: Run) -> tuple[int, list[int]] | None:
    """A class the model predicts for every val sample (no ties), over the last epochs."""
    if run.priors is None or not run.priors.val:
        return None
    val = run.series("val")
    epochs = sorted(val)[-LAST_EPOCHS:]
    if len(epochs) < LAST_EPOCHS:
        return None
    points = [val[e] for e in epochs]
    if any(p.correct is None or p.tie_rate != 0.0 for p in points):
        return None
    if len({p.correct for p in points}) != 1:
        return None
    n, correct = points[-1].n, points[-1].correct or 0.0
    for c, share in enumerate(run.priors.val):
        if abs(share * n - correct) < 0.5:  # correct is a count: within half a sample is equal
            return c, epochs
    return None
