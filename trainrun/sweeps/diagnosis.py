"""Sweep diagnosis: per variant, the gap between train mode and eval mode on the training set,
and how it moves with the swept parameter (seed 000: dropout makes train mode look worse).

Gaps are "how much better eval mode is": ``train_eval.accuracy - train.accuracy`` and
``train.loss - train_eval.loss``, averaged over a run's last few epochs, then over its seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainrun.diagnosis import Finding, diagnose
from trainrun.diagnosis.series import fmt, num
from trainrun.diagnosis.thresholds import LAST_EPOCHS
from trainrun.spec import JobSpec
from trainrun.sweeps.leaderboard import Curves, RunRecord


@dataclass(frozen=True)
class RunEvidence:
    """What one run adds: its record, the val_beats_train finding (if any)."""

    record: RunRecord
    finding: Finding | None


def find_val_beats_train(
    spec: dict[str, Any], rows: Sequence[Any], status: str, error: str | None
) -> Finding | None:
    try:
        parsed = JobSpec.model_validate(spec)
    except ValueError:
        return None
    found = diagnose(parsed, rows, status, error).findings
    return next((f for f in found if f.code == "val_beats_train"), None)


def mode_gaps(curves: Curves, last: int = LAST_EPOCHS) -> dict[str, float | None]:
    """Eval mode against train mode on the training set, over the last ``last`` epochs."""
    train, te = curves.get("train", {}), curves.get("train_eval", {})
    epochs = sorted(set(train) & set(te))[-last:]
    out: dict[str, float | None] = {}
    for metric, sign in (("accuracy", 1.0), ("loss", -1.0)):
        gaps = [
            sign * (float(b) - float(a))
            for e in epochs
            if (a := train[e].get(metric)) is not None
            and (b := te[e].get(metric)) is not None
            and math.isfinite(a)
            and math.isfinite(b)
        ]
        out[f"{metric}_gap"] = statistics.fmean(gaps) if gaps else None
    out["epochs"] = len(epochs)
    return out


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their average rank
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None if either side is constant."""
    if len(xs) < 2 or len(xs) != len(ys):
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def swept_parameters(overrides: Sequence[dict[str, Any]]) -> list[str]:
    """The override paths whose value differs between variants."""
    paths = dict.fromkeys(p for o in overrides for p in o)
    return [p for p in paths if len({repr(o.get(p)) for o in overrides}) > 1]


def diagnose_sweep(evidence: Sequence[RunEvidence]) -> dict[str, Any]:
    """Per variant: gaps (mean over seeds) and findings; a summary against the swept value."""
    by_variant: dict[int, list[RunEvidence]] = {}
    for ev in evidence:
        by_variant.setdefault(ev.record.variant, []).append(ev)
    variants: list[dict[str, Any]] = []
    for variant, runs in sorted(by_variant.items()):
        gaps = [mode_gaps(ev.record.curves) for ev in runs]
        acc = [g["accuracy_gap"] for g in gaps if g["accuracy_gap"] is not None]
        loss = [g["loss_gap"] for g in gaps if g["loss_gap"] is not None]
        variants.append(
            {
                "variant": variant,
                "overrides": runs[0].record.overrides,
                "job_ids": [ev.record.job_id for ev in runs if ev.record.job_id],
                "accuracy_gap": num(statistics.fmean(acc)) if acc else None,
                "loss_gap": num(statistics.fmean(loss)) if loss else None,
                "epochs_used": max((int(g["epochs"] or 0) for g in gaps), default=0),
                "val_beats_train": [_finding(ev) for ev in runs if ev.finding is not None],
            }
        )
    return {"variants": variants, "summary": _summary(variants)}


def _finding(ev: RunEvidence) -> dict[str, Any]:
    f = ev.finding
    assert f is not None
    return {
        "job_id": ev.record.job_id,
        "seed": ev.record.seed,
        "severity": f.severity,
        "title": f.title,
        "message": f.message,
        "epochs": list(f.epochs),
        "figures": f.figures,
    }


def _summary(variants: list[dict[str, Any]]) -> dict[str, Any]:
    swept = swept_parameters([v["overrides"] for v in variants])
    gap_key = "accuracy_gap" if any(v["accuracy_gap"] is not None for v in variants) else "loss_gap"
    out: dict[str, Any] = {
        "swept": swept,
        "gap": gap_key,
        "parameter": None,
        "by_value": [],
        "spearman": None,
        "text": "",
    }
    numeric = len(swept) == 1 and all(_numeric(v["overrides"].get(swept[0])) for v in variants)
    if not numeric:
        out["text"] = (
            "The gap per variant is listed; a correlation is reported when exactly one numeric "
            f"parameter is swept (swept here: {', '.join(swept) or 'none'})."
        )
        return out
    param = swept[0]
    points = sorted(
        (float(v["overrides"][param]), float(v[gap_key]))
        for v in variants
        if v[gap_key] is not None
    )
    rho = spearman([x for x, _ in points], [y for _, y in points])
    out |= {
        "parameter": param,
        "by_value": [{"value": x, gap_key: num(y)} for x, y in points],
        "spearman": num(rho),
    }
    trend = (
        "grows with"
        if rho is not None and rho > 0
        else "shrinks with"
        if rho is not None and rho < 0
        else "does not move with"
    )
    listing = ", ".join(f"{x:g}: {fmt(y)}" for x, y in points)
    out["text"] = (
        f"The eval-mode minus train-mode {gap_key.replace('_gap', '')} gap on the training set "
        f"{trend} {param} (Spearman {fmt(rho)} over {len(points)} variants; {listing}). "
        "A gap that grows with a train-only layer's strength (dropout rate, say) means the "
        "train curve understates the model: compare train_eval with val instead."
    )
    return out
