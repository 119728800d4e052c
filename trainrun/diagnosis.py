"""Diagnosis: findings about a run, read from its stored per-epoch figures and its spec.

Pure: no database and no tensors. ``diagnose`` takes the spec, the figure rows (anything with
``EpochFigures``' attribute names), the job's status and error, and optionally the class
frequencies of the split; it judges whatever epochs are there, so it works on a running job.

Each finding names *why*, with the epochs and figures it rests on (seeds 000-004).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from trainrun.figures import STAT_COLUMNS, derive
from trainrun.spec import JobSpec

Severity = Literal["info", "warning", "error"]

# -- thresholds ------------------------------------------------------------------------------
LAST_EPOCHS = (
    3  # "over the last epochs": judge a trend on 3 epochs so one noisy epoch decides nothing
)
ACCURACY_Z = 2.0  # about 95% two-sided: accuracy gaps under 2 binomial standard errors are noise
LOSS_REL_TOL = 0.05  # no per-sample loss variance is stored; loss gaps under 5% are not reported
TIE_RATE_HIGH = 0.5  # most eval samples share their top score: the accuracy is mostly coin flips
CONSTANT_TIE_RATE = 0.99  # practically every sample tied: the output does not depend on the input
NOT_LEARNING_MARGIN = 0.05  # the best val loss must beat the constant predictor's by 5% to count
NOT_LEARNING_MIN_EPOCHS = 3  # give a run 3 epochs before calling it stuck
OVERFIT_RISE = 0.05  # val loss 5% above its minimum is a rise, not jitter
OVERFIT_PATIENCE = 2  # the minimum must lie 2+ epochs back, as early stopping would wait
PENALTY_RATIO = 1.0  # penalty above the data term: the optimiser mostly shrinks weights
TIMING_SHARE = 0.5  # the running-average estimate must cover half the train-mode gap to be named

# Findings are returned in this order: the run's health first, explanations of curves last.
CODES = (
    "diverged",
    "degenerate_predictions",
    "not_learning",
    "penalty_dominates",
    "overfitting",
    "val_beats_train",
)
EVAL_PHASES = ("train_eval", "val", "test")
TRAIN_MODE_LAYERS = ("dropout", "batchnorm1d", "batchnorm2d")
WEIGHT_LAYERS = ("linear", "conv1d", "conv2d")
CLIPPING_ACTIVATIONS = ("relu", "hardsigmoid")  # can output exactly equal values: ties
# The loop's message: "diverged: the <phase> loss is <value> at epoch <N>; ..."
_DIVERGED = re.compile(r"diverged: the (\w+) loss is (\S+) at epoch (\d+)")


class FigureRow(Protocol):
    """What a figure row must offer: ``EpochFigures``' attributes."""

    @property
    def epoch(self) -> int: ...
    @property
    def phase(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def loss_sum(self) -> float: ...
    @property
    def penalty(self) -> float: ...
    @property
    def correct(self) -> float | None: ...
    @property
    def ties(self) -> int | None: ...
    @property
    def sse(self) -> float | None: ...
    @property
    def sae(self) -> float | None: ...
    @property
    def target_sum(self) -> float | None: ...
    @property
    def target_sq_sum(self) -> float | None: ...
    @property
    def target_count(self) -> int | None: ...


@dataclass(frozen=True)
class ClassPriors:
    """Class frequencies of the train and val splits (classification only)."""

    train: tuple[float, ...]
    val: tuple[float, ...]

    @classmethod
    def from_counts(cls, train: Sequence[int], val: Sequence[int]) -> ClassPriors:
        return cls(_normalise(train), _normalise(val))


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    title: str  # one line, used in the summary
    message: str  # one paragraph for a person
    epochs: tuple[int, ...]  # the epochs the evidence comes from
    figures: dict[str, Any]  # finite numbers, strings and lists of them (JSON-safe)


@dataclass(frozen=True)
class Diagnosis:
    status: str
    task: str | None
    epoch: int  # the last epoch with figures (0: none yet)
    findings: tuple[Finding, ...]
    summary: str


@dataclass(frozen=True)
class Point:
    """One phase of one epoch, derived."""

    n: int
    loss: float | None
    penalty: float | None
    accuracy: float | None = None
    tie_rate: float | None = None
    correct: float | None = None
    mse: float | None = None
    r2: float | None = None
    target_sum: float | None = None
    target_sq_sum: float | None = None
    target_count: int | None = None
    finite: bool = True

    def get(self, metric: str) -> float | None:
        value = getattr(self, metric)
        return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    def better(self, a: float, b: float) -> float:
        """How much ``a`` is better than ``b`` (negative: worse)."""
        return a - b if self.higher_is_better else b - a

    def tolerance(self, a: Point, b: Point) -> float:
        """The smallest gap between two measurements that is not noise."""
        if self.name == "accuracy":
            p = ((a.accuracy or 0.0) * a.n + (b.accuracy or 0.0) * b.n) / max(a.n + b.n, 1)
            p = min(max(p, 1.0 / max(a.n + b.n, 1)), 1.0 - 1.0 / max(a.n + b.n, 1))
            return ACCURACY_Z * math.sqrt(p * (1 - p) * (1 / max(a.n, 1) + 1 / max(b.n, 1)))
        ref = b.get(self.name) or 0.0
        return LOSS_REL_TOL * abs(ref) + 1e-12


ACCURACY = Metric("accuracy", True)
LOSS = Metric("loss", False)


@dataclass(frozen=True)
class TrainModeLayer:
    path: str  # where in the spec: model.layers[2], model.dropout
    kind: str  # dropout | batchnorm
    detail: str  # for people: "dropout p=0.5"


@dataclass
class Run:
    """The figures by phase and epoch, plus what the spec says about the model."""

    spec: JobSpec
    task: str | None
    curves: dict[str, dict[int, Point]]
    priors: ClassPriors | None
    status: str
    error: str | None
    epochs: list[int] = field(default_factory=list)

    def at(self, phase: str, epoch: int) -> Point | None:
        return self.curves.get(phase, {}).get(epoch)

    def series(self, phase: str) -> dict[int, Point]:
        return self.curves.get(phase, {})

    def value(self, phase: str, epoch: int, metric: str) -> float:
        """A finite figure known to exist (callers pick epochs with ``_complete_epochs``)."""
        point = self.at(phase, epoch)
        value = point.get(metric) if point is not None else None
        if value is None:
            raise KeyError((phase, epoch, metric))
        return value


def diagnose(
    spec: JobSpec,
    rows: Sequence[FigureRow],
    status: str,
    error: str | None,
    priors: ClassPriors | None = None,
) -> Diagnosis:
    """Every finding the stored figures support, in ``CODES`` order, and a short summary."""
    curves: dict[str, dict[int, Point]] = {}
    for r in rows:
        curves.setdefault(r.phase, {})[r.epoch] = _point(r)
    task = None
    if rows:
        task = "classification" if any(r.correct is not None for r in rows) else "regression"
    epochs = sorted({r.epoch for r in rows})
    run = Run(spec, task, curves, priors, status, error, epochs)
    found = [f for check in CHECKS if (f := check(run)) is not None]
    found.sort(key=lambda f: CODES.index(f.code))
    return Diagnosis(status, task, epochs[-1] if epochs else 0, tuple(found), _summary(run, found))


def _summary(run: Run, found: Sequence[Finding]) -> str:
    if not run.epochs:
        return f"No figures yet (job {run.status}); nothing to diagnose."
    where = f"{len(run.epochs)} epoch{'s' if len(run.epochs) != 1 else ''} ({run.status})"
    if not found:
        return f"No problems found in {where}."
    return f"{len(found)} finding{'s' if len(found) != 1 else ''} in {where}: " + "; ".join(
        f.title for f in found
    )


def _point(r: FigureRow) -> Point:
    stats = {c: getattr(r, c) for c in STAT_COLUMNS}
    d = derive(stats)
    raw = [r.loss_sum, r.penalty, r.correct, r.sse, r.sae, r.target_sum, r.target_sq_sum]
    return Point(
        n=r.n or 0,
        loss=d.get("loss"),
        penalty=d.get("penalty"),
        accuracy=d.get("accuracy"),
        tie_rate=d.get("tie_rate"),
        correct=r.correct,
        mse=d.get("mse"),
        r2=d.get("r2"),
        target_sum=r.target_sum,
        target_sq_sum=r.target_sq_sum,
        target_count=r.target_count,
        finite=all(v is None or math.isfinite(v) for v in raw),
    )


# -- helpers ---------------------------------------------------------------------------------


def _normalise(counts: Sequence[int | float]) -> tuple[float, ...]:
    total = float(sum(counts))
    return tuple(c / total for c in counts) if total > 0 else ()


def _num(x: float | None) -> float | None:
    """A JSON-safe figure: finite, six significant digits."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _span(epochs: Sequence[int]) -> str:
    if not epochs:
        return "no epochs"
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    return f"epochs {epochs[0]}-{epochs[-1]}"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _nearest(series: dict[int, Point], epoch: int, metric: str) -> tuple[int, Point] | None:
    """The point at ``epoch`` or the closest earlier one with a finite ``metric``."""
    for e in sorted((e for e in series if e <= epoch), reverse=True):
        if series[e].get(metric) is not None:
            return e, series[e]
    return None


def _layers(spec: JobSpec) -> list[Any]:
    return list(getattr(spec.model, "layers", None) or [])


def train_mode_layers(spec: JobSpec) -> list[TrainModeLayer]:
    """Layers that behave differently in train and eval mode, with their place in the spec."""
    found: list[TrainModeLayer] = []
    for i, layer in enumerate(_layers(spec)):
        if layer.name == "dropout":
            p = layer.params.p
            found.append(TrainModeLayer(f"model.layers[{i}]", "dropout", f"dropout p={p:g}"))
        elif layer.name.startswith("batchnorm"):
            found.append(TrainModeLayer(f"model.layers[{i}]", "batchnorm", layer.name))
    model = spec.model
    hidden = getattr(model, "hidden", None)
    if hidden is not None:  # the mlp preset: name its options, not the layers it expands to
        count = f"each of the {len(hidden)} hidden layers"
        if getattr(model, "input_batchnorm", False):
            found.append(
                TrainModeLayer("model.input_batchnorm", "batchnorm", "BatchNorm on the inputs")
            )
        if getattr(model, "batchnorm", False):
            found.append(TrainModeLayer("model.batchnorm", "batchnorm", f"BatchNorm after {count}"))
        p = getattr(model, "dropout", 0.0) or 0.0
        if p > 0:
            found.append(
                TrainModeLayer("model.dropout", "dropout", f"dropout p={p:g} after {count}")
            )
    return found


def final_activation(spec: JobSpec) -> tuple[str, str] | None:
    """(path, name) of an activation placed after the model's last weight layer, if any."""
    layers = _layers(spec)
    last = max((i for i, layer in enumerate(layers) if layer.name in WEIGHT_LAYERS), default=None)
    if last is not None:
        from models.layers import ACTIVATIONS

        for i in range(last + 1, len(layers)):
            if layers[i].name in ACTIVATIONS:
                return f"model.layers[{i}]", layers[i].name
    out = getattr(spec.model, "output_activation", None)
    if out:
        return "model.output_activation", str(out)
    return None


def _output_width(spec: JobSpec) -> int | None:
    for layer in reversed(_layers(spec)):
        if layer.name == "linear":
            return int(layer.params.out_features)
        if layer.name in WEIGHT_LAYERS:
            return None
    width = getattr(spec.model, "out_features", None)
    return int(width) if width else None


def _class_priors(run: Run) -> tuple[ClassPriors | None, bool]:
    """The class frequencies, or uniform ones from the output width; (priors, assumed)."""
    if run.priors is not None and run.priors.train and run.priors.val:
        return run.priors, False
    width = _output_width(run.spec)
    if width is None:
        return None, True
    k = 2 if width == 1 else width
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
        return _mean([_xent([v, 1 - v], [t, 1 - t]) for t, v in zip(pt, pv, strict=True)])
    if kind == "mse":  # one-hot targets, the mean squared error per column
        return _mean([v * (1 - t) ** 2 + (1 - v) * t * t for t, v in zip(pt, pv, strict=True)])
    return None


def _regression_baseline(run: Run, epoch: int) -> float | None:
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


def _complete_epochs(run: Run, *phases: str, metric: str = "loss") -> list[int]:
    return [
        e
        for e in run.epochs
        if all((p := run.at(ph, e)) is not None and p.get(metric) is not None for ph in phases)
    ]


# -- findings --------------------------------------------------------------------------------


def _diverged(run: Run) -> Finding | None:
    phase: str | None = None
    value = "nan"
    epoch: int | None = None
    if run.error:
        m = _DIVERGED.search(run.error)
        if m:
            phase, value, epoch = m.group(1), m.group(2), int(m.group(3))
    if epoch is None:
        bad = [
            (e, ph)
            for ph in ("train", *EVAL_PHASES)
            for e, p in run.series(ph).items()
            if not p.finite
        ]
        if not bad:
            return None
        epoch, phase = min(bad, key=lambda b: (b[0], ("train", *EVAL_PHASES).index(b[1])))
        value = "not finite"
    finite = [e for e, p in run.series("train").items() if e < epoch and p.get("loss") is not None]
    before = sorted(finite)[-LAST_EPOCHS:]
    losses = [run.value("train", e, "loss") for e in before]
    lr = getattr(run.spec.optimizer, "lr", None)
    figures: dict[str, Any] = {
        "phase": phase,
        "value": value,
        "epoch": epoch,
        "train_loss_before": [_num(x) for x in losses],
        "lr": _num(lr) if isinstance(lr, int | float) else None,
    }
    trend = ""
    if len(losses) >= 2:
        rising = all(b > a for a, b in itertools.pairwise(losses))
        trend = (
            f" The train loss was already rising before it ({', '.join(_f(x) for x in losses)} "
            f"over {_span(before)}), the usual sign of a step size too large."
            if rising
            else f" The last finite train losses were {', '.join(_f(x) for x in losses)} "
            f"({_span(before)}), so the blow-up came suddenly: look for extreme or missing "
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


def _degenerate(run: Run) -> Finding | None:
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
    priors, _ = _class_priors(run)
    k = len(priors.train) if priors else None
    constant_class = None if worst > TIE_RATE_HIGH else _constant_class(run)
    if worst <= TIE_RATE_HIGH and constant_class is None:
        return None
    tied_epochs = sorted(
        e for e, p in run.series("val").items() if (p.tie_rate or 0.0) > TIE_RATE_HIGH
    )
    figures: dict[str, Any] = {f"{ph}_tie_rate": _num(p.tie_rate) for ph, p in now.items()} | {
        f"{ph}_accuracy": _num(p.accuracy) for ph, p in now.items()
    }
    figures["chance_accuracy"] = _num(1.0 / k) if k else None
    constant = worst >= CONSTANT_TIE_RATE
    acc = now[worst_phase].accuracy
    if constant_class is not None:
        c, epochs = constant_class
        figures["constant_class"] = c
        text = (
            f"The val accuracy has been exactly {_f(run.series('val')[epochs[-1]].accuracy)} "
            f"over {_span(epochs)}, the share of class {c} in the validation split: the model "
            f"predicts class {c} for every sample, whatever the input."
        )
        tied_epochs = epochs
    else:
        state = "a constant output" if constant else "mostly tied outputs"
        text = (
            f"At epoch {latest}, {worst:.0%} of the {worst_phase} samples had their top score "
            f"shared by several classes ({state}). trainrun's accuracy gives a k-way tie 1/k "
            f"credit, the expected accuracy of a random tie-break, so the {worst_phase} accuracy "
            f"shown ({_f(acc)}) is chance"
            + (f" (1/{k} = {_f(1.0 / k)})" if constant and k else "")
            + ", not skill; an accuracy that counts ties as hits would report close to 100% "
            "here (seed 002)."
        )
    hint = ""
    act = final_activation(run.spec)
    if act is not None:
        path, name = act
        figures["final_activation"] = f"{path}: {name}"
        if name in CLIPPING_ACTIVATIONS:
            why = (
                "clips every negative score to exactly 0, so once the scores go negative all "
                "outputs are equal. Remove it: cross_entropy and bce_with_logits take raw scores"
                if name == "relu"
                else "saturates at exactly 0 and 1, so saturated outputs are equal. Drop it and "
                "use bce_with_logits on the raw scores"
            )
            hint = f" The model ends with {name} at {path} after its last weight layer: it {why}."
        else:
            hint = (
                f" The model ends with {name} at {path}; it can saturate to equal values, so "
                "check whether the loss wants raw scores instead."
            )
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
        if abs(share * n - correct) < 0.5:
            return c, epochs
    return None


def _not_learning(run: Run) -> Finding | None:
    val = {e: p for e, p in run.series("val").items() if p.get("loss") is not None}
    if len(val) < NOT_LEARNING_MIN_EPOCHS:
        return None
    figures: dict[str, Any] = {}
    last = max(val)
    if run.task == "regression":
        baseline = _regression_baseline(run, last)
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
        figures |= {
            "best_val_mse": _num(best),
            "constant_mse": _num(baseline),
            "best_val_r2": _num(val[best_e].r2),
        }
        message = (
            f"The validation MSE never got meaningfully below that of predicting the training "
            f"targets' mean: its best, {_f(best)} at epoch {best_e}, against {_f(baseline)} "
            f"for the constant (R² {_f(val[best_e].r2)}). The model has not learned anything "
            "the mean does not already say. Check that the features carry signal, standardise "
            "them, and try a larger learning rate or a model without a saturating output."
        )
        return Finding(
            "not_learning",
            "error",
            f"not learning: best val MSE {_f(best)} vs {_f(baseline)} for the mean",
            message,
            (best_e, last),
            figures,
        )
    priors, assumed = _class_priors(run)
    if priors is None:
        return None
    baseline = constant_baseline(run.spec, priors)
    best_e = min(val, key=lambda e: val[e].loss or 0.0)
    best_loss = val[best_e].loss or 0.0
    loss_stuck = None if baseline is None else best_loss >= (1 - NOT_LEARNING_MARGIN) * baseline
    majority = max(range(len(priors.train)), key=lambda c: priors.train[c])
    chance = max(priors.val[majority], 1.0 / len(priors.train))
    accs = {e: p.accuracy for e, p in val.items() if p.accuracy is not None}
    acc_stuck = None
    best_acc_e = None
    if accs:
        best_acc_e = max(accs, key=lambda e: accs[e] or 0.0)
        n = val[best_acc_e].n
        noise = ACCURACY_Z * math.sqrt(chance * (1 - chance) / max(n, 1))
        acc_stuck = (accs[best_acc_e] or 0.0) <= chance + noise
    verdicts = [v for v in (loss_stuck, acc_stuck) if v is not None]
    if not verdicts or not all(verdicts):
        return None
    figures |= {
        "best_val_loss": _num(best_loss),
        "constant_loss": _num(baseline),
        "best_val_accuracy": _num(accs.get(best_acc_e)) if best_acc_e else None,
        "chance_accuracy": _num(chance),
        "class_priors": "assumed uniform" if assumed else "from the split",
    }
    parts = []
    if baseline is not None:
        freqs = "assumed-uniform" if assumed else "training split's"
        parts.append(
            f"the best validation loss, {_f(best_loss)} at epoch {best_e}, is not meaningfully "
            f"below {_f(baseline)}, the loss of always predicting the {freqs} class frequencies"
        )
    if best_acc_e is not None:
        parts.append(
            f"the best validation accuracy, {_f(accs[best_acc_e])} at epoch {best_acc_e}, is "
            f"within noise of chance ({_f(chance)}, what the best constant answer scores)"
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
        f"not learning: best val loss {_f(best_loss)} vs constant {_f(baseline)}"
        if baseline is not None
        else f"not learning: best val accuracy at chance {_f(chance)}",
        message,
        tuple(sorted({best_e, last} | ({best_acc_e} if best_acc_e else set()))),
        figures,
    )


def _penalty_dominates(run: Run) -> Finding | None:
    train = run.series("train")
    epochs = [
        e
        for e in sorted(train)
        if train[e].get("loss") is not None and train[e].get("penalty") is not None
    ][-LAST_EPOCHS:]
    ratios = [
        (train[e].penalty or 0.0) / (train[e].loss or 0.0)
        for e in epochs
        if (train[e].loss or 0.0) > 0
    ]
    if not ratios or _mean(ratios) <= PENALTY_RATIO:
        return None
    last = train[epochs[-1]]
    reg = run.spec.regularization
    named = ", ".join(f"{k}={v:g}" for k, v in (("l1", reg.l1), ("l2", reg.l2)) if v) or "penalty"
    ratio = _mean(ratios)
    message = (
        f"The regulariser ({named}) is {ratio:.2g} times the data term of the training "
        f"objective over {_span(epochs)} (penalty {_f(last.penalty)} against a data loss "
        f"of {_f(last.loss)} at epoch {epochs[-1]}): the optimiser spends most of its effort "
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
            "ratio": _num(ratio),
            "penalty": _num(last.penalty),
            "train_loss": _num(last.loss),
            "l1": _num(reg.l1),
            "l2": _num(reg.l2),
        },
    )


def _overfitting(run: Run) -> Finding | None:
    val = {e: p for e, p in run.series("val").items() if p.get("loss") is not None}
    if not val:
        return None
    best_e = min(val, key=lambda e: (val[e].loss or 0.0, e))
    last = max(val)
    best, end = val[best_e].loss or 0.0, val[last].loss or 0.0
    if last - best_e < OVERFIT_PATIENCE or end - best <= OVERFIT_RISE * abs(best):
        return None
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
        f"Validation loss was lowest at epoch {best_e} ({_f(best)}) and has risen {rise:.0%} "
        f"since, to {_f(end)} at epoch {last}, while the {ref_phase} loss went from "
        f"{_f(at_best[1].loss)} to {_f(at_end[1].loss)}: the gap between the training set and "
        f"validation grew from {_f(gap_best)} to {_f(gap_end)}. The model is fitting what is "
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
            "best_val_loss": _num(best),
            "val_loss": _num(end),
            "rise": _num(rise),
            "gap_at_best": _num(gap_best),
            "gap_at_end": _num(gap_end),
            "reference_phase": ref_phase,
        },
    )


def _timing_estimate(run: Run, metric: Metric, epochs: Sequence[int]) -> tuple[float, float] | None:
    """(expected, observed) train-mode gap from averaging over an epoch of fast improvement.

    The train figure is averaged while the weights move from those of epoch e-1 to those of
    epoch e; if the improvement is steady it lies halfway between ``train_eval`` at e-1 and e.
    """
    te, tr = run.series("train_eval"), run.series("train")
    expected, observed = [], []
    for e in epochs:
        a, b, t = te.get(e - 1), te.get(e), tr.get(e)
        if a is None or b is None or t is None:
            continue
        va, vb, vt = a.get(metric.name), b.get(metric.name), t.get(metric.name)
        if va is None or vb is None or vt is None:
            continue
        expected.append(max(metric.better(vb, va), 0.0) / 2)
        observed.append(metric.better(vb, vt))
    if not expected:
        return None
    return _mean(expected), _mean(observed)


def _val_beats_train(run: Run) -> Finding | None:
    metrics = (ACCURACY, LOSS) if run.task == "classification" else (LOSS,)
    for metric in metrics:
        epochs = _complete_epochs(run, "train", "val", metric=metric.name)[-LAST_EPOCHS:]
        if not epochs:
            continue
        gaps = [
            metric.better(run.value("val", e, metric.name), run.value("train", e, metric.name))
            for e in epochs
        ]
        last_val, last_train = run.at("val", epochs[-1]), run.at("train", epochs[-1])
        assert last_val is not None and last_train is not None
        if min(gaps) > 0 and _mean(gaps) > metric.tolerance(last_val, last_train):
            return _explain(run, metric, epochs, _mean(gaps))
    return None


def _explain(run: Run, metric: Metric, epochs: list[int], gap: float) -> Finding:
    m = metric.name
    val = [run.value("val", e, m) for e in epochs]
    train = [run.value("train", e, m) for e in epochs]
    te_epochs = [e for e in epochs if (p := run.at("train_eval", e)) and p.get(m) is not None]
    figures: dict[str, Any] = {
        "metric": m,
        "train": _num(_mean(train)),
        "val": _num(_mean(val)),
        "gap": _num(gap),
    }
    causes: list[str] = []
    parts: list[str] = []
    head = (
        f"Validation {m} ({_f(_mean(val))}) is {'higher' if metric.higher_is_better else 'lower'} "
        f"than the train-mode {m} ({_f(_mean(train))}) over {_span(epochs)}."
    )
    layers = train_mode_layers(run.spec)
    if layers:
        figures["layers"] = [f"{x.path}: {x.detail}" for x in layers]
    if not te_epochs:
        parts.append(
            "No eval-mode pass over the training set (train_eval) was stored for these epochs, "
            "so train-mode effects cannot be told apart from a split difference; set "
            "evaluation.train_eval.every to 1."
        )
        causes.append("unknown")
    else:
        te = [run.value("train_eval", e, m) for e in te_epochs]
        tr = [run.value("train", e, m) for e in te_epochs]
        va = [run.value("val", e, m) for e in te_epochs]
        last_te, last_tr, last_va = (
            run.at(ph, te_epochs[-1]) for ph in ("train_eval", "train", "val")
        )
        assert last_te is not None and last_tr is not None and last_va is not None
        mode_gap = _mean([metric.better(a, b) for a, b in zip(te, tr, strict=True)])
        split_gap = _mean([metric.better(a, b) for a, b in zip(va, te, strict=True)])
        figures |= {
            "train_eval": _num(_mean(te)),
            "mode_gap": _num(mode_gap),
            "split_gap": _num(split_gap),
        }
        timing = _timing_estimate(run, metric, te_epochs)
        if timing is not None:
            figures["timing_estimate"] = _num(timing[0])
        mode = mode_gap > metric.tolerance(last_te, last_tr)
        split = split_gap > metric.tolerance(last_va, last_te)
        if mode:
            agree = (
                f"The eval-mode pass over the training set (train_eval, {_f(_mean(te))}) "
                + ("agrees with validation" if not split else "is better than train mode too")
                + ": the gap lies between train mode and eval mode, not between the data."
            )
            parts.append(agree)
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
            explained = timing is not None and timing[0] >= TIMING_SHARE * mode_gap
            if timing is not None and (explained or not layers):
                causes.append("running_average")
                parts.append(
                    f"The train figure is averaged over the epoch while the weights improve, "
                    f"whereas val and train_eval are measured at its end: from the train_eval "
                    f"change between consecutive epochs that alone accounts for about "
                    f"{_f(timing[0])} of the {_f(mode_gap)} gap"
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
        if split:
            causes.append("easier_split")
            parts.append(
                f"Validation is also better than the eval-mode train figure "
                f"({_f(_mean(va))} against {_f(_mean(te))}) by more than noise: the validation "
                "split looks easier than the training split. Check the split (stratification, "
                "duplicates, a time order) or use a larger validation set."
            )
        if not mode and not split:
            causes.append("small_parts")
            parts.append(
                f"The gap splits between train mode against eval mode ({_f(mode_gap)}) and "
                f"train_eval against val ({_f(split_gap)}), each within noise on its own."
            )
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


CHECKS: tuple[Callable[[Run], Finding | None], ...] = (
    _diverged,
    _degenerate,
    _not_learning,
    _penalty_dominates,
    _overfitting,
    _val_beats_train,
)
