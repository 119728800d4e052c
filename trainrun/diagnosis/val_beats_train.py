"""Finding ``val_beats_train``: validation scores better than training, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainrun.diagnosis.layers import TrainModeLayer, train_mode_layers
from trainrun.diagnosis.schema import Finding, Severity
from trainrun.diagnosis.series import ACCURACY, LOSS, Metric, Run, fmt, mean, num, span
from trainrun.diagnosis.thresholds import LAST_EPOCHS, TIMING_SHARE


def val_beats_train(run: Run) -> Finding | None:
    metrics = (ACCURACY, LOSS) if run.task == "classification" else (LOSS,)
    for metric in metrics:
        epochs = run.complete_epochs("train", "val", metric=metric.name)[-LAST_EPOCHS:]
        if not epochs:
            continue
        gaps = run.gaps(metric, "val", "train", epochs)
        if min(gaps) > 0 and mean(gaps) > run.tolerance(metric, "val", "train", epochs[-1]):
            return _explain(run, metric, epochs, mean(gaps))
    return None


def _explain(run: Run, metric: Metric, epochs: list[int], gap: float) -> Finding:
    m = metric.name
    val = run.values("val", epochs, m)
    train = run.values("train", epochs, m)
    figures: dict[str, Any] = {
        "metric": m,
        "train": num(mean(train)),
        "val": num(mean(val)),
        "gap": num(gap),
    }
    head = (
        f"Validation {m} ({fmt(mean(val))}) is {'higher' if metric.higher_is_better else 'lower'} "
        f"than the train-mode {m} ({fmt(mean(train))}) over {span(epochs)}."
    )
    layers = train_mode_layers(run.spec)
    if layers:
        figures["layers"] = [f"{x.path}: {x.detail}" for x in layers]
    te_epochs = [e for e in epochs if (p := run.at("train_eval", e)) and p.get(m) is not None]
    if te_epochs:
        causes, parts = _attribute(run, metric, te_epochs, layers, figures)
    else:
        causes = ["unknown"]
        parts = [
            "No eval-mode pass over the training set (train_eval) was stored for these epochs, "
            "so train-mode effects cannot be told apart from a split difference; set "
            "evaluation.train_eval.every to 1."
        ]
    figures["causes"] = causes
    severity: Severity = "warning" if {"easier_split", "unknown"} & set(causes) else "info"
    title = "validation beats training: " + ", ".join(c.replace("_", " ") for c in causes)
    return Finding(
        "val_beats_train",
        severity,
        title,
        " ".join([head, *parts]),
        tuple(epochs),
        figures,
    )


def _attribute(
    run: Run,
    metric: Metric,
    epochs: list[int],
    layers: list[TrainModeLayer],
    figures: dict[str, Any],
) -> tuple[list[str], list[str]]:
    """(causes, sentences): split the gap into train vs eval mode and train_eval vs val."""
    m = metric.name
    te = run.values("train_eval", epochs, m)
    va = run.values("val", epochs, m)
    mode_gap = mean(run.gaps(metric, "train_eval", "train", epochs))
    split_gap = mean(run.gaps(metric, "val", "train_eval", epochs))
    figures |= {
        "train_eval": num(mean(te)),
        "mode_gap": num(mode_gap),
        "split_gap": num(split_gap),
    }
    timing = _timing_estimate(run, metric, epochs)
    if timing is not None:
        figures["timing_estimate"] = num(timing)
    mode = mode_gap > run.tolerance(metric, "train_eval", "train", epochs[-1])
    split = split_gap > run.tolerance(metric, "val", "train_eval", epochs[-1])
    causes: list[str] = []
    parts: list[str] = []
    if mode:
        agree = (
            f"The eval-mode pass over the training set (train_eval, {fmt(mean(te))}) "
            + ("agrees with validation" if not split else "is better than train mode too")
            + ": the gap lies between train mode and eval mode, not between the data."
        )
        parts.append(agree)
        _explain_mode_gap(mode_gap, timing, layers, causes, parts)
    if split:
        causes.append("easier_split")
        parts.append(
            f"Validation is also better than the eval-mode train figure "
            f"({fmt(mean(va))} against {fmt(mean(te))}) by more than noise: the validation "
            "split looks easier than the training split. Check the split (stratification, "
            "duplicates, a time order) or use a larger validation set."
        )
    if not mode and not split:
        causes.append("small_parts")
        parts.append(
            f"The gap splits between train mode against eval mode ({fmt(mode_gap)}) and "
            f"train_eval against val ({fmt(split_gap)}), each within noise on its own."
        )
    return causes, parts


def _explain_mode_gap(
    mode_gap: float,
    timing: float | None,
    layers: list[TrainModeLayer],
    causes: list[str],
    parts: list[str],
) -> None:
    """Name what makes train mode worse: train-mode layers, the epoch average, or both."""
    if layers:
        causes.append("train_mode_layers")
        named = "; ".join(f"{x.detail} at {x.path}" for x in layers)
        parts.append(
            f"The model has layers that act only while training: {named}. Dropout "
            "silences units in train mode only; BatchNorm uses each batch's statistics "
            "in train mode and running averages in eval mode. Compare train_eval with "
            "val; the train curve is what the optimiser saw with those layers on "
            "(seed 000)."
        )
    explained = timing is not None and timing >= TIMING_SHARE * mode_gap
    if timing is not None and (explained or not layers):
        causes.append("running_average")
        parts.append(
            f"The train figure is averaged over the epoch while the weights improve, "
            f"whereas val and train_eval are measured at its end: from the train_eval "
            f"change between consecutive epochs that alone accounts for about "
            f"{fmt(timing)} of the {fmt(mode_gap)} gap"
            + (
                "."
                if explained
                else "; the rest is unexplained by the spec (no dropout or BatchNorm)."
            )
        )
    elif not layers:
        causes.append("running_average")
        parts.append(
            "The model has no dropout or BatchNorm, so the likely reason is timing: the "
            "train figure is averaged over the epoch while the weights improve, and "
            "val is measured at its end (no consecutive train_eval epochs to size it)."
        )


def _timing_estimate(run: Run, metric: Metric, epochs: Sequence[int]) -> float | None:
    """The train-mode gap that averaging over an epoch of steady improvement alone would give.

    The train figure is averaged while the weights move from those of epoch e-1 to those of
    epoch e; if the improvement is steady it lies halfway between ``train_eval`` at e-1 and e.
    """
    te, tr = run.series("train_eval"), run.series("train")
    expected = []
    for e in epochs:
        a, b, t = te.get(e - 1), te.get(e), tr.get(e)
        if a is None or b is None or t is None:
            continue
        va, vb, vt = a.get(metric.name), b.get(metric.name), t.get(metric.name)
        if va is None or vb is None or vt is None:
            continue
        expected.append(max(metric.better(vb, va), 0.0) / 2)
    return mean(expected) if expected else None
