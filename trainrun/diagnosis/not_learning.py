"""Finding ``not_learning``: the model does no better than a constant answer."""

from __future__ import annotations

from typing import Any

from trainrun.diagnosis.baselines import class_priors, constant_baseline, regression_baseline
from trainrun.diagnosis.schema import Finding
from trainrun.diagnosis.series import Point, Run, binomial_noise, fmt, num
from trainrun.diagnosis.thresholds import NOT_LEARNING_MARGIN, NOT_LEARNING_MIN_EPOCHS


def not_learning(run: Run) -> Finding | None:
    val = run.finite("val")
    if len(val) < NOT_LEARNING_MIN_EPOCHS:
        return None
    if run.task == "regression":
        return _regression(run, val)
    return _classification(run, val)


def _regression(run: Run, val: dict[int, Point]) -> Finding | None:
    last = max(val)
    baseline = regression_baseline(run, last)
    best_e = min(
        (e for e in val if val[e].get("mse") is not None),
        key=lambda e: val[e].mse or 0.0,
        default=None,
    )
    if baseline is None or best_e is None or baseline <= 0:
        return None
    best = val[best_e].mse or 0.0
    if best < (1 - NOT_LEARNING_MARGIN) * baseline:
        return None
    message = (
        f"The validation MSE never got meaningfully below that of predicting the training "
        f"targets' mean: its best, {fmt(best)} at epoch {best_e}, against {fmt(baseline)} "
        f"for the constant (R² {fmt(val[best_e].r2)}). The model has not learned anything "
        "the mean does not already say. Check that the features carry signal, standardise "
        "them, and try a larger learning rate or a model without a saturating output."
    )
    return Finding(
        "not_learning",
        "error",
        f"not learning: best val MSE {fmt(best)} vs {fmt(baseline)} for the mean",
        message,
        (best_e, last),
        {
            "best_val_mse": num(best),
            "constant_mse": num(baseline),
            "best_val_r2": num(val[best_e].r2),
        },
    )


def _classification(run: Run, val: dict[int, Point]) -> Finding | None:
    priors, assumed = class_priors(run)
    if priors is None:
        return None
    last = max(val)
    baseline = constant_baseline(run.spec, priors)
    best_e = min(val, key=lambda e: val[e].loss or 0.0)
    best_loss = val[best_e].loss or 0.0
    loss_stuck = None if baseline is None else best_loss >= (1 - NOT_LEARNING_MARGIN) * baseline
    # The best constant answer is the train split's majority class, scored on val.
    majority = max(range(len(priors.train)), key=lambda c: priors.train[c])
    chance = max(priors.val[majority], 1.0 / len(priors.train))
    accs = {e: p.accuracy for e, p in val.items() if p.accuracy is not None}
    acc_stuck = None
    best_acc_e = None
    if accs:
        best_acc_e = max(accs, key=lambda e: accs[e] or 0.0)
        noise = binomial_noise(chance, val[best_acc_e].n)
        acc_stuck = (accs[best_acc_e] or 0.0) <= chance + noise
    verdicts = [v for v in (loss_stuck, acc_stuck) if v is not None]
    if not verdicts or not all(verdicts):
        return None
    figures: dict[str, Any] = {
        "best_val_loss": num(best_loss),
        "constant_loss": num(baseline),
        "best_val_accuracy": num(accs.get(best_acc_e)) if best_acc_e else None,
        "chance_accuracy": num(chance),
        "class_priors": "assumed uniform" if assumed else "from the split",
    }
    parts = []
    if baseline is not None:
        freqs = "assumed-uniform" if assumed else "training split's"
        parts.append(
            f"the best validation loss, {fmt(best_loss)} at epoch {best_e}, is not meaningfully "
            f"below {fmt(baseline)}, the loss of always predicting the {freqs} class frequencies"
        )
    if best_acc_e is not None:
        parts.append(
            f"the best validation accuracy, {fmt(accs[best_acc_e])} at epoch {best_acc_e}, is "
            f"within noise of chance ({fmt(chance)}, what the best constant answer scores)"
        )
    message = (
        f"The model is not learning: {'; and '.join(parts)}. "
        "Whatever it outputs could have been computed without looking at the inputs. Check the "
        "learning rate (too small, or so large that it stalled), the final activation (a ReLU or "
        "hardsigmoid on the scores can block gradients), and that the labels match the inputs."
    )
    return Finding(
        "not_learning",
        "error",
        f"not learning: best val loss {fmt(best_loss)} vs constant {fmt(baseline)}"
        if baseline is not None
        else f"not learning: best val accuracy at chance {fmt(chance)}",
        message,
        tuple(sorted({best_e, last} | ({best_acc_e} if best_acc_e else set()))),
        figures,
    )
