"""Finding ``penalty_dominates``: the regulariser outweighs the data term of the objective."""

from __future__ import annotations

from trainrun.diagnosis.schema import Finding
from trainrun.diagnosis.series import Run, fmt, mean, num, span
from trainrun.diagnosis.thresholds import LAST_EPOCHS, PENALTY_RATIO


def penalty_dominates(run: Run) -> Finding | None:
    train = run.series("train")
    epochs = sorted(set(run.finite("train")) & set(run.finite("train", "penalty")))[-LAST_EPOCHS:]
    ratios = [
        (train[e].penalty or 0.0) / (train[e].loss or 0.0)
        for e in epochs
        if (train[e].loss or 0.0) > 0
    ]
    if not ratios or mean(ratios) <= PENALTY_RATIO:
        return None
    last = train[epochs[-1]]
    reg = run.spec.regularization
    named = ", ".join(f"{k}={v:g}" for k, v in (("l1", reg.l1), ("l2", reg.l2)) if v) or "penalty"
    ratio = mean(ratios)
    message = (
        f"The regulariser ({named}) is {ratio:.2g} times the data term of the training "
        f"objective over {span(epochs)} (penalty {fmt(last.penalty)} against a data loss "
        f"of {fmt(last.loss)} at epoch {epochs[-1]}): the optimiser spends most of its effort "
        "shrinking the weights rather than fitting the data, which leaves the model "
        "underfit. Lower the coefficient. The loss curves show the data term only and the "
        "penalty is its own series, so train and validation losses stay comparable (seed 001)."
    )
    return Finding(
        "penalty_dominates",
        "warning",
        f"penalty {ratio:.2g} times the data loss",
        message,
        tuple(epochs),
        {
            "ratio": num(ratio),
            "penalty": num(last.penalty),
            "train_loss": num(last.loss),
            "l1": num(reg.l1),
            "l2": num(reg.l2),
        },
    )
