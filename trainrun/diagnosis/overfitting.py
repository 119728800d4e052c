"""Finding ``overfitting``: val loss rose from its minimum while the train/val gap widened."""

from __future__ import annotations

import math

from trainrun.diagnosis.schema import Finding
from trainrun.diagnosis.series import Point, Run, fmt, num
from trainrun.diagnosis.thresholds import LOSS_REL_TOL, OVERFIT_PATIENCE, OVERFIT_RISE


def _nearest(series: dict[int, Point], epoch: int, metric: str) -> tuple[int, Point] | None:
    """The point at ``epoch`` or the closest earlier one with a finite ``metric``."""
    for e in sorted((e for e in series if e <= epoch), reverse=True):
        if series[e].get(metric) is not None:
            return e, series[e]
    return None


def overfitting(run: Run) -> Finding | None:
    val = run.finite("val")
    if not val:
        return None
    best_e = min(val, key=lambda e: (val[e].loss or 0.0, e))
    last = max(val)
    best, end = val[best_e].loss or 0.0, val[last].loss or 0.0
    if last - best_e < OVERFIT_PATIENCE or end - best <= OVERFIT_RISE * abs(best):
        return None
    # train_eval measures the training set like val (eval mode, end of epoch); train is a fallback.
    ref_phase = "train_eval" if run.series("train_eval") else "train"
    at_best = _nearest(run.series(ref_phase), best_e, "loss")
    at_end = _nearest(run.series(ref_phase), last, "loss")
    if at_best is None or at_end is None:
        return None
    gap_best = best - (at_best[1].loss or 0.0)
    gap_end = end - (at_end[1].loss or 0.0)
    if gap_end - gap_best <= LOSS_REL_TOL * abs(best):
        return None
    rise = (end - best) / abs(best) if best else math.inf
    stopping = getattr(run.spec.training, "early_stopping", None)
    advice = (
        "Early stopping is on; its restore_best keeps the weights of the best epoch."
        if stopping is not None
        else "Early stopping on val.loss (training.early_stopping) would keep the weights of "
        "the best epoch."
    )
    message = (
        f"Validation loss was lowest at epoch {best_e} ({fmt(best)}) and has risen {rise:.0%} "
        f"since, to {fmt(end)} at epoch {last}, while the {ref_phase} loss went from "
        f"{fmt(at_best[1].loss)} to {fmt(at_end[1].loss)}: the gap between the training set and "
        f"validation grew from {fmt(gap_best)} to {fmt(gap_end)}. The model is fitting what is "
        f"particular to the training rows. {advice} More regularisation (dropout, l2) or more "
        "data narrows the gap."
    )
    return Finding(
        "overfitting",
        "warning",
        f"overfitting: val loss up {rise:.0%} since epoch {best_e}",
        message,
        (best_e, last),
        {
            "best_epoch": best_e,
            "best_val_loss": num(best),
            "val_loss": num(end),
            "rise": num(rise),
            "gap_at_best": num(gap_best),
            "gap_at_end": num(gap_end),
            "reference_phase": ref_phase,
        },
    )
