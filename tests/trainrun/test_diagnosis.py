"""The diagnosis rules, on synthetic figure rows built from simple per-epoch numbers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import digits_spec, sine_spec
from trainrun.diagnosis import (
    CODES,
    ClassPriors,
    Diagnosis,
    constant_baseline,
    diagnose,
    final_activation,
    train_mode_layers,
)
from trainrun.spec import JobSpec


@dataclass
class Row:
    """The attributes of ``EpochFigures`` that the diagnosis reads."""

    epoch: int
    phase: str
    n: int
    loss_sum: float
    penalty: float = 0.0
    correct: float | None = None
    ties: int | None = None
    sse: float | None = None
    sae: float | None = None
    target_sum: float | None = None
    target_sq_sum: float | None = None
    target_count: int | None = None


Curve = Sequence[tuple[float, float]]  # per epoch: (loss, accuracy)


def clf_rows(
    train: Curve,
    val: Curve,
    train_eval: Curve | None = None,
    *,
    n: int = 2000,
    tie_rate: float = 0.0,
    penalty: float = 0.0,
) -> list[Row]:
    """Classification rows, epochs numbered from 1; ``train_eval`` defaults to ``train``."""
    rows = []
    phases = {"train": train, "train_eval": train if train_eval is None else train_eval, "val": val}
    for phase, curve in phases.items():
        for i, (loss, acc) in enumerate(curve, start=1):
            ties = round(tie_rate * n) if phase != "train" else 0
            rows.append(Row(i, phase, n, loss * n, penalty, acc * n, ties))
    return rows


def reg_rows(
    train_mse: Sequence[float], val_mse: Sequence[float], *, n: int = 400, var: float = 4.0
) -> list[Row]:
    """Regression rows (one target, mean 1, variance ``var``) with the given MSEs."""
    rows = []
    for phase, curve in {"train": train_mse, "train_eval": train_mse, "val": val_mse}.items():
        for i, mse in enumerate(curve, start=1):
            rows.append(
                Row(
                    i,
                    phase,
                    n,
                    loss_sum=mse * n,
                    sse=mse * n,
                    sae=math.sqrt(mse) * n,
                    target_sum=1.0 * n,
                    target_sq_sum=(var + 1.0) * n,
                    target_count=n,
                )
            )
    return rows


def spec(raw: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(raw)


def plain_sine() -> JobSpec:
    """Seed 000's network without its dropout."""
    raw = sine_spec()
    raw["model"]["layers"] = [
        {"conv1d": {"out_channels": 1, "kernel_size": 10}},
        "relu",
        "flatten",
        {"linear": {"out_features": 2}},
    ]
    raw["loss"] = {"kind": "bce_with_logits"}
    return spec(raw)


def regression_spec() -> JobSpec:
    return spec(
        {
            "name": "diabetes",
            "data": {"source": "diabetes", "standardize": True},
            "model": {"kind": "mlp", "hidden": [16]},
            "loss": {"kind": "mse"},
        }
    )


def codes(d: Diagnosis) -> list[str]:
    return [f.code for f in d.findings]


def finding(d: Diagnosis, code: str) -> Any:
    return next(f for f in d.findings if f.code == code)


BALANCED = ClassPriors((0.5, 0.5), (0.5, 0.5))
IMPROVING = [(0.60, 0.70), (0.45, 0.80), (0.35, 0.86), (0.30, 0.89), (0.28, 0.90)]


# -- no false positives --------------------------------------------------------------------


def test_a_clean_run_where_the_three_curves_agree_has_no_findings() -> None:
    rows = clf_rows(IMPROVING, IMPROVING, IMPROVING)
    d = diagnose(spec(sine_spec()), rows, "succeeded", None, BALANCED)
    assert d.findings == ()
    assert d.summary == "No problems found in 5 epochs (succeeded)."
    assert d.task == "classification" and d.epoch == 5


def test_a_clean_regression_run_has_no_findings() -> None:
    mse = [3.0, 1.5, 1.0, 0.8, 0.7]
    d = diagnose(regression_spec(), reg_rows(mse, mse), "running", None)
    assert d.findings == ()
    assert d.task == "regression"


def test_no_figures_yet() -> None:
    d = diagnose(spec(sine_spec()), [], "queued", None)
    assert d.findings == () and d.epoch == 0 and d.task is None
    assert "No figures yet" in d.summary


def test_a_running_job_with_one_epoch_is_judged_without_errors() -> None:
    d = diagnose(spec(sine_spec()), clf_rows(IMPROVING[:1], IMPROVING[:1]), "running", None)
    assert d.findings == ()


# -- val_beats_train -----------------------------------------------------------------------


def test_dropout_gap_names_the_layer_of_a_seed_000_spec() -> None:
    train = [(0.50, 0.80)] * 4
    evald = [(0.35, 0.90)] * 4
    d = diagnose(spec(sine_spec()), clf_rows(train, evald, evald), "succeeded", None, BALANCED)
    assert codes(d) == ["val_beats_train"]
    f = d.findings[0]
    assert f.severity == "info"
    assert f.figures["causes"] == ["train_mode_layers"]
    assert f.figures["layers"] == ["model.layers[2]: dropout p=0.5"]
    assert "dropout p=0.5 at model.layers[2]" in f.message
    assert f.epochs == (2, 3, 4)
    assert f.figures["metric"] == "accuracy"


def test_train_mode_layers_of_an_mlp_preset_name_its_options() -> None:
    raw = digits_spec()
    raw["model"] = {
        "kind": "mlp",
        "hidden": [32, 16],
        "dropout": 0.3,
        "batchnorm": True,
        "input_batchnorm": True,
    }
    layers = train_mode_layers(spec(raw))
    assert [(x.path, x.kind) for x in layers] == [
        ("model.input_batchnorm", "batchnorm"),
        ("model.batchnorm", "batchnorm"),
        ("model.dropout", "dropout"),
    ]
    assert layers[2].detail == "dropout p=0.3 after each of the 2 hidden layers"
    assert train_mode_layers(spec(digits_spec())) == []


def test_batchnorm_in_a_sequential_spec_is_named() -> None:
    raw = digits_spec()
    raw["model"] = {
        "kind": "sequential",
        "layers": [{"linear": 32}, "batchnorm1d", "relu", {"linear": 10}],
    }
    layers = train_mode_layers(spec(raw))
    assert [(x.path, x.detail) for x in layers] == [("model.layers[1]", "batchnorm1d")]


def test_train_mode_layers_of_a_cnn1d_preset_name_its_dropout() -> None:
    raw = sine_spec()
    raw["model"] = {"kind": "cnn1d", "dropout": 0.5}
    layers = train_mode_layers(spec(raw))
    assert [(x.path, x.kind) for x in layers] == [("model.dropout", "dropout")]
    assert layers[0].detail == "dropout p=0.5 after each of the 2 conv blocks and the linear head"
    raw["model"] = {"kind": "cnn1d", "blocks": 1, "fc_blocks": 3, "dropout": 0.2}
    assert train_mode_layers(spec(raw))[0].detail == (
        "dropout p=0.2 after the conv block and each of the 3 linear layers of the head"
    )
    raw["model"] = {"kind": "cnn1d"}  # no dropout by default, and cnn1d has no BatchNorm
    assert train_mode_layers(spec(raw)) == []


def test_a_dropout_gap_in_a_cnn1d_preset_is_put_down_to_its_dropout() -> None:
    raw = sine_spec()
    raw["model"] = {"kind": "cnn1d", "dropout": 0.5}
    train = [(0.50, 0.80)] * 4
    evald = [(0.35, 0.90)] * 4
    d = diagnose(spec(raw), clf_rows(train, evald, evald), "succeeded", None, BALANCED)
    f = finding(d, "val_beats_train")
    assert f.figures["causes"] == ["train_mode_layers"]
    assert "at model.dropout" in f.message


def test_without_dropout_the_running_average_timing_is_estimated() -> None:
    # train_eval (end of epoch) drops fast; train mode averages over the epoch: halfway.
    end = [1.0, 0.6, 0.4, 0.3, 0.25]
    during = [1.3, 0.8, 0.5, 0.35, 0.275]
    train = [(loss, 0.8) for loss in during]
    evald = [(loss, 0.8) for loss in end]
    d = diagnose(
        plain_sine(),
        clf_rows(train, evald, evald),
        "succeeded",
        None,
        BALANCED,
    )
    f = finding(d, "val_beats_train")
    assert f.figures["metric"] == "loss"
    assert f.figures["causes"] == ["running_average"]
    assert "layers" not in f.figures
    observed = f.figures["mode_gap"]
    assert f.figures["timing_estimate"] == pytest.approx(observed, rel=1e-6)
    assert "averaged over the epoch" in f.message


def test_an_easier_validation_split_is_reported_against_train_eval() -> None:
    train = [(0.45, 0.80)] * 4
    val = [(0.30, 0.90)] * 4
    d = diagnose(plain_sine(), clf_rows(train, val, train), "succeeded", None, BALANCED)
    f = finding(d, "val_beats_train")
    assert f.figures["causes"] == ["easier_split"]
    assert f.severity == "warning"
    assert "validation split looks easier" in f.message


def test_a_gap_within_binomial_noise_is_not_reported() -> None:
    train = [(0.45, 0.80)] * 4
    val = [(0.45, 0.82)] * 4  # 2 points on 200 samples is well inside 2 standard errors
    d = diagnose(plain_sine(), clf_rows(train, val, train, n=200), "succeeded", None, BALANCED)
    assert "val_beats_train" not in codes(d)


def test_without_train_eval_the_cause_is_unknown() -> None:
    rows = [r for r in clf_rows([(0.5, 0.8)] * 3, [(0.3, 0.9)] * 3) if r.phase != "train_eval"]
    f = finding(diagnose(spec(sine_spec()), rows, "running", None), "val_beats_train")
    assert f.figures["causes"] == ["unknown"]
    assert "train_eval" in f.message


# -- degenerate_predictions and not_learning -------------------------------------------------


def seed_002_spec() -> JobSpec:
    """A ReLU on the logits (seed 002)."""
    raw = digits_spec()
    raw["model"] = {"kind": "sequential", "layers": [{"linear": 10}, "relu"]}
    return spec(raw)


def test_all_tied_outputs_are_degenerate_with_a_final_relu_hint() -> None:
    ln10 = math.log(10)
    stuck = [(ln10, 0.1)] * 4
    d = diagnose(seed_002_spec(), clf_rows(stuck, stuck, tie_rate=1.0), "succeeded", None)
    assert codes(d) == ["degenerate_predictions", "not_learning"]
    f = d.findings[0]
    assert f.severity == "error"
    assert f.figures["val_tie_rate"] == 1.0
    assert f.figures["final_activation"] == "model.layers[1]: relu"
    assert f.figures["chance_accuracy"] == 0.1
    assert "1/k" in f.message and "model.layers[1]" in f.message and "chance" in f.message
    nl = d.findings[1]
    assert nl.figures["constant_loss"] == pytest.approx(ln10, rel=1e-5)
    assert nl.figures["class_priors"] == "assumed uniform"


def test_a_high_tie_rate_without_a_final_activation_has_no_hint() -> None:
    d = diagnose(spec(digits_spec()), clf_rows(IMPROVING, IMPROVING, tie_rate=0.6), "running", None)
    f = finding(d, "degenerate_predictions")
    assert "final_activation" not in f.figures
    assert "not_learning" not in codes(d)


def test_a_model_that_always_answers_one_class_is_degenerate() -> None:
    priors = ClassPriors((0.7, 0.3), (0.7, 0.3))
    constant = [(0.61, 0.7)] * 4
    d = diagnose(plain_sine(), clf_rows(constant, constant, n=1000), "succeeded", None, priors)
    f = finding(d, "degenerate_predictions")
    assert f.figures["constant_class"] == 0
    assert "not_learning" in codes(d)


def test_not_learning_at_chance_on_balanced_data() -> None:
    ln2 = math.log(2)
    flat = [(ln2 + 0.001, 0.5)] * 5
    d = diagnose(spec(sine_spec()), clf_rows(flat, flat), "succeeded", None, BALANCED)
    f = finding(d, "not_learning")
    assert f.figures["constant_loss"] == pytest.approx(ln2, rel=1e-5)
    assert f.figures["chance_accuracy"] == 0.5


def test_not_learning_uses_the_prior_entropy_on_imbalanced_data() -> None:
    priors = ClassPriors((0.9, 0.1), (0.9, 0.1))
    prior_entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert constant_baseline(spec(sine_spec()), priors) == pytest.approx(prior_entropy)
    flat = [(prior_entropy, 0.9)] * 4  # far below ln 2, yet no better than the prior
    d = diagnose(spec(sine_spec()), clf_rows(flat, flat), "succeeded", None, priors)
    assert finding(d, "not_learning").figures["class_priors"] == "from the split"
    # under a uniform assumption the same run would have looked like it learned
    assert "not_learning" not in codes(diagnose(spec(sine_spec()), clf_rows(flat, flat), "x", None))


def test_not_learning_waits_for_a_few_epochs() -> None:
    flat = [(math.log(2), 0.5)] * 2
    d = diagnose(spec(sine_spec()), clf_rows(flat, flat), "running", None, BALANCED)
    assert "not_learning" not in codes(d)


def test_not_learning_in_regression_compares_with_the_train_mean() -> None:
    mse = [4.1, 4.0, 3.95, 4.0]
    d = diagnose(regression_spec(), reg_rows(mse, mse, var=4.0), "succeeded", None)
    f = finding(d, "not_learning")
    assert f.figures["constant_mse"] == pytest.approx(4.0)
    assert f.figures["best_val_mse"] == pytest.approx(3.95)


def test_constant_baselines_for_label_smoothing_and_mse() -> None:
    raw = digits_spec(loss={"kind": "cross_entropy", "label_smoothing": 0.1})
    uniform = ClassPriors((0.1,) * 10, (0.1,) * 10)
    assert constant_baseline(spec(raw), uniform) == pytest.approx(math.log(10))
    raw = digits_spec(loss={"kind": "mse"})
    assert constant_baseline(spec(raw), uniform) == pytest.approx(0.1 * 0.9)


# -- overfitting, diverged, penalty ---------------------------------------------------------


def test_overfitting_reports_the_best_epoch_the_rise_and_the_gap() -> None:
    te = [(1.0, 0.6), (0.78, 0.7), (0.58, 0.8), (0.45, 0.85), (0.35, 0.9), (0.25, 0.95)]
    val = [(1.0, 0.6), (0.8, 0.7), (0.6, 0.78), (0.65, 0.78), (0.75, 0.77), (0.9, 0.76)]
    d = diagnose(digits_spec_model(), clf_rows(te, val, te), "succeeded", None)
    f = finding(d, "overfitting")
    assert f.figures["best_epoch"] == 3
    assert f.figures["rise"] == pytest.approx(0.5)
    assert f.figures["gap_at_best"] == pytest.approx(0.02)
    assert f.figures["gap_at_end"] == pytest.approx(0.65)
    assert f.epochs == (3, 6)
    assert "early_stopping" in f.message


def digits_spec_model() -> JobSpec:
    return spec(digits_spec())


def test_a_val_loss_that_just_flattens_is_not_overfitting() -> None:
    val = [(1.0, 0.6), (0.8, 0.7), (0.6, 0.78), (0.61, 0.78), (0.6, 0.78), (0.61, 0.78)]
    d = diagnose(digits_spec_model(), clf_rows(val, val), "succeeded", None)
    assert "overfitting" not in codes(d)


def test_diverged_from_the_job_error() -> None:
    rising = [(0.7, 0.5), (0.9, 0.5), (1.4, 0.5)]
    error = "diverged: the train loss is nan at epoch 4; lower the learning rate or check inputs"
    d = diagnose(spec(sine_spec()), clf_rows(rising, rising), "failed", error, BALANCED)
    f = finding(d, "diverged")
    assert (f.figures["phase"], f.figures["value"], f.figures["epoch"]) == ("train", "nan", 4)
    assert f.figures["lr"] == 0.001
    assert "already rising" in f.message
    assert f.epochs == (1, 2, 3, 4)
    assert d.findings[0].code == "diverged"


def test_diverged_from_non_finite_figures() -> None:
    rows = clf_rows(IMPROVING[:3], IMPROVING[:3])
    rows.append(Row(4, "val", 2000, math.inf, 0.0, 1000.0, 0))
    d = diagnose(spec(sine_spec()), rows, "running", None)
    f = finding(d, "diverged")
    assert (f.figures["phase"], f.figures["epoch"]) == ("val", 4)
    json.dumps(f.figures, allow_nan=False)


def test_penalty_larger_than_the_data_term() -> None:
    raw = sine_spec(regularization={"l2": 0.5})
    d = diagnose(spec(raw), clf_rows(IMPROVING, IMPROVING, penalty=0.9), "running", None)
    f = finding(d, "penalty_dominates")
    assert f.figures["ratio"] == pytest.approx((0.9 / 0.35 + 0.9 / 0.30 + 0.9 / 0.28) / 3, 1e-5)
    assert "l2=0.5" in f.message and "seed 001" in f.message
    small = diagnose(spec(raw), clf_rows(IMPROVING, IMPROVING, penalty=0.1), "running", None)
    assert "penalty_dominates" not in codes(small)


# -- the whole answer ------------------------------------------------------------------------


def test_findings_come_in_a_stable_order_and_are_json_safe() -> None:
    ln10 = math.log(10)
    stuck = [(ln10, 0.1)] * 4
    error = "diverged: the val loss is inf at epoch 5; lower the learning rate"
    d = diagnose(
        seed_002_spec(), clf_rows(stuck, stuck, tie_rate=1.0, penalty=5.0), "failed", error
    )
    assert codes(d) == ["diverged", "degenerate_predictions", "not_learning", "penalty_dominates"]
    assert [c for c in CODES if c in codes(d)] == codes(d)
    assert d.summary.startswith("4 findings in 4 epochs (failed): diverged")
    for f in d.findings:
        json.dumps(f.figures, allow_nan=False)
        assert f.message and "\n" not in f.message


def test_final_activation_of_presets_and_layers() -> None:
    assert final_activation(spec(sine_spec())) == ("model.layers[5]", "hardsigmoid")
    assert final_activation(plain_sine()) is None
    raw = digits_spec()
    raw["model"] = {"kind": "mlp", "hidden": [8], "output_activation": "relu"}
    assert final_activation(spec(raw)) == ("model.output_activation", "relu")
