"""What a constant predictor scores: the bar a model must clear to count as learning."""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainrun.diagnosis.layers import output_width
from trainrun.diagnosis.schema import ClassPriors
from trainrun.diagnosis.series import Run, mean
from trainrun.spec import JobSpec


def class_priors(run: Run) -> tuple[ClassPriors | None, bool]:
    """The class frequencies, or uniform ones from the output width; (priors, assumed)."""
    if run.priors is not None and run.priors.train and run.priors.val:
        return run.priors, False
    width = output_width(run.spec)
    if width is None:
        return None, True
    k = 2 if width == 1 else width  # one output column is a binary classifier
    uniform = tuple([1.0 / k] * k)
    return ClassPriors(uniform, uniform), True


def _xent(p: Sequence[float], q: Sequence[float]) -> float:
    """Cross-entropy of targets ``p`` under predictions ``q``."""
    return -sum(pi * math.log(max(qi, 1e-12)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def constant_baseline(spec: JobSpec, priors: ClassPriors) -> float | None:
    """The val loss of the best constant predictor fitted to the train split's frequencies."""
    kind = spec.loss.kind
    pt, pv = priors.train, priors.val
    k = len(pt)
    if kind == "cross_entropy":
        eps = float(getattr(spec.loss, "label_smoothing", 0.0))
        tt = [(1 - eps) * p + eps / k for p in pt]
        tv = [(1 - eps) * p + eps / k for p in pv]
        return _xent(tv, tt)
    if kind in ("bce", "bce_with_logits"):
        if k == 2:  # one output or two one-hot columns give the same mean
            return _xent(pv, pt)
        return mean([_xent([v, 1 - v], [t, 1 - t]) for t, v in zip(pt, pv, strict=True)])
    if kind == "mse":  # one-hot targets, the mean squared error per column
        return mean([v * (1 - t) ** 2 + (1 - v) * t * t for t, v in zip(pt, pv, strict=True)])
    return None


def regression_baseline(run: Run, epoch: int) -> float | None:
    """MSE on val of predicting the train targets' mean: var(val) + (mean_val - mean_train)²."""
    val = run.at("val", epoch)
    train = next(
        (
            p
            for ph in ("train", "train_eval")
            if (p := run.at(ph, epoch)) is not None and p.target_count
        ),
        None,
    )
    if val is None or train is None or not val.target_count or not train.target_count:
        return None
    if val.target_sum is None or val.target_sq_sum is None or train.target_sum is None:
        return None
    mean_v = val.target_sum / val.target_count
    var_v = max(val.target_sq_sum / val.target_count - mean_v * mean_v, 0.0)
    mean_t = train.target_sum / train.target_count
    return var_v + (mean_v - mean_t) ** 2
