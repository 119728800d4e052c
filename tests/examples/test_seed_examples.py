"""The examples in examples/, one per seed article, run through the engine on CPU: each shows
the phenomenon its article describes, in the stored curves and in the diagnosis."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tests.support import REPO
from trainrun.diagnosis import ClassPriors, Diagnosis, Finding, diagnose
from trainrun.figures import STAT_COLUMNS, derive
from trainrun.objectives import bind_objective
from trainrun.planning import plan_job, prepare_data
from trainrun.settings import Limits
from trainrun.spec import JobSpec
from worker.engine import Hooks, train
from worker.engine.loop import TrainResult

EXAMPLES = REPO / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.rglob("*.yaml"))
SEED_004 = EXAMPLES / "004_digits_plain_bn_dropout"
Curves = dict[str, dict[int, dict[str, float | None]]]  # phase -> epoch -> derived figures


@dataclass(frozen=True)
class FigureRow:
    """A stored figure row as the database holds it (what ``diagnose`` reads)."""

    epoch: int
    phase: str
    n: int
    loss_sum: float
    penalty: float
    correct: float | None = None
    ties: int | None = None
    sse: float | None = None
    sae: float | None = None
    target_sum: float | None = None
    target_sq_sum: float | None = None
    target_count: int | None = None


@dataclass
class Run:
    spec: JobSpec
    rows: list[FigureRow]
    result: TrainResult
    diagnosis: Diagnosis

    @property
    def curves(self) -> Curves:
        out: Curves = {}
        for r in self.rows:
            out.setdefault(r.phase, {})[r.epoch] = derive({c: getattr(r, c) for c in STAT_COLUMNS})
        return out

    def last(self, phase: str, metric: str, epochs: int = 1) -> float:
        """The mean of ``metric`` over the last ``epochs`` stored epochs of ``phase``."""
        series = self.curves[phase]
        values = [series[e][metric] for e in sorted(series)[-epochs:]]
        assert all(v is not None for v in values), (phase, metric, values)
        return float(np.mean([v for v in values if v is not None]))

    def finding(self, code: str) -> Finding:
        found = {f.code: f for f in self.diagnosis.findings}
        assert code in found, f"expected {code}, diagnosis: {self.diagnosis.summary}"
        return found[code]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These models are tiny: one thread is many times faster than two contending ones.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(path: Path, **overrides: Any) -> JobSpec:
    raw = yaml.safe_load(path.read_text())
    raw["resources"] = {"device": "cpu"}
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = raw
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return JobSpec.model_validate(raw)


def run(spec: JobSpec) -> Run:
    rows: list[FigureRow] = []

    def on_epoch(epoch: int, figures: dict[str, dict[str, Any]]) -> None:
        for phase, r in figures.items():
            stats: dict[str, Any] = {c: r.get(c) for c in STAT_COLUMNS}
            rows.append(FigureRow(epoch, phase, **stats))

    split = prepare_data(spec)
    result = train(spec, split, Hooks(on_epoch))
    priors = None
    if split.train.task == "classification":
        k = split.train.n_classes
        priors = ClassPriors.from_counts(
            np.bincount(split.train.y, minlength=k).tolist(),
            np.bincount(split.val.y, minlength=k).tolist(),
        )
    return Run(spec, rows, result, diagnose(spec, rows, "succeeded", None, priors))


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_validates_and_dry_builds(path: Path) -> None:
    spec = JobSpec.model_validate(yaml.safe_load(path.read_text()))
    plan = plan_job(spec, Limits())
    assert plan.parameter_count > 0
    assert path.read_text().startswith("# Seed 00"), "each example says which seed it shows"


def test_there_is_an_example_for_every_seed() -> None:
    names = [p.relative_to(EXAMPLES).parts[0] for p in ALL_EXAMPLES]
    assert {n[:3] for n in names} == {"000", "001", "002", "003", "004"}


def test_000_dropout_makes_train_mode_accuracy_lag_validation() -> None:
    r = run(load(EXAMPLES / "000_dropout_sine.yaml"))
    train, train_eval, val = (r.last(ph, "accuracy", 3) for ph in ("train", "train_eval", "val"))
    assert val > 0.95, "the sine task is easy: the model must learn it"
    assert train < val - 0.05  # the surprise of seed 000
    assert abs(train_eval - val) < 0.03  # measured the same way, train and val agree
    finding = r.finding("val_beats_train")
    assert finding.figures["causes"] == ["train_mode_layers"]
    assert finding.figures["layers"] == [f"model.layers[{i}]: dropout p=0.5" for i in (2, 5, 8)]
    assert "dropout" in finding.message


def test_001_penalty_is_its_own_series_and_loss_the_data_term() -> None:
    path = EXAMPLES / "001_l2_higgs_synthetic.yaml"
    spec = load(path)
    assert spec.regularization.l2 > 0
    with_l2, without = run(spec), run(load(path, **{"regularization.l2": 0.0}))
    for phase in ("train", "train_eval", "val"):
        assert all(f["penalty"] and f["penalty"] > 0 for f in with_l2.curves[phase].values())
        assert all(f["penalty"] == 0 for f in without.curves[phase].values())
    # Same seed, same first batches: the data terms start level, while the penalty is a third
    # of them; a loss that included it would sit a whole penalty higher.
    first_l2, first_plain = with_l2.curves["train"][1], without.curves["train"][1]
    assert first_l2["penalty"] is not None and first_l2["penalty"] > 0.2
    assert abs((first_l2["loss"] or 0) - (first_plain["loss"] or 0)) < 0.1 * first_l2["penalty"]
    # The stored val loss is exactly the data term of the final weights.
    split = prepare_data(spec)
    objective = bind_objective(spec.loss, split.train, with_l2.result.output_width)
    with torch.no_grad():
        out = with_l2.result.model.eval()(torch.from_numpy(split.val.x))
        data_term = objective.per_sample(out, torch.from_numpy(split.val.y)).mean()
    assert with_l2.last("val", "loss") == pytest.approx(float(data_term), rel=1e-5)
    # Seed 001's point: the penalty narrows the gap between the training set and validation.
    gap_l2 = with_l2.last("val", "loss") - with_l2.last("train_eval", "loss")
    gap_plain = without.last("val", "loss") - without.last("train_eval", "loss")
    assert gap_plain > gap_l2 + 0.02
    assert "penalty_dominates" not in {f.code for f in with_l2.diagnosis.findings}


def test_002_relu_on_logits_scores_chance_not_99_percent() -> None:
    spec = load(EXAMPLES / "002_relu_logits_digits.yaml")
    r = run(spec)
    k = 10
    for phase in ("train_eval", "val"):
        assert r.last(phase, "tie_rate") > 0.95
        assert r.last(phase, "accuracy") == pytest.approx(1 / k, abs=0.02)
    # What the seed's in_top_k reported: a tie for the top score counted as a hit.
    split = prepare_data(spec)
    with torch.no_grad():
        out = r.result.model.eval()(torch.from_numpy(split.val.x))
    top = out.max(dim=1, keepdim=True).values
    in_top_k = (out == top).gather(1, torch.from_numpy(split.val.y)[:, None]).float().mean()
    assert float(in_top_k) > 0.95
    finding = r.finding("degenerate_predictions")
    assert finding.severity == "error"
    assert finding.figures["final_activation"] == "model.output_activation: relu"
    assert finding.figures["chance_accuracy"] == pytest.approx(1 / k)


def test_003_regression_stops_early_and_measures_the_test_split() -> None:
    spec = load(EXAMPLES / "003_regression_diabetes.yaml")
    r = run(spec)
    stopping = spec.training.early_stopping
    assert stopping is not None and stopping.restore_best
    assert r.result.stopped_early
    assert r.result.epochs_run < spec.training.epochs
    assert r.result.best_epoch == r.result.epochs_run - stopping.patience
    test = r.curves["test"]
    assert list(test) == [r.result.best_epoch]
    figures = test[r.result.best_epoch]
    for metric in ("loss", "mse", "mae", "r2"):
        value = figures[metric]
        assert value is not None and math.isfinite(value), metric
    assert figures["loss"] == pytest.approx(figures["mse"])
    assert (figures["r2"] or 0) > 0.2, "the restored best weights beat predicting the mean"
    # Seed 003's list: with dropout on, the train-mode loss is worse than validation.
    assert r.last("train", "loss", 3) > r.last("val", "loss", 3)
    finding = r.finding("val_beats_train")
    assert "train_mode_layers" in finding.figures["causes"]
    layers = finding.figures["layers"]
    assert "model.dropout: dropout p=0.5 after each of the 2 hidden layers" in layers


def test_004_plain_batchnorm_and_dropout_differ_as_expected() -> None:
    plain, bn, drop = (run(load(SEED_004 / f"{v}.yaml")) for v in ("plain", "batchnorm", "dropout"))
    # Plain: nothing acts differently in train mode, so train and train_eval agree.
    assert abs(plain.last("train", "accuracy", 3) - plain.last("train_eval", "accuracy", 3)) < 0.01
    # Dropout: the train-mode curve lags the same weights measured in eval mode.
    assert drop.last("train", "accuracy", 3) < drop.last("train_eval", "accuracy", 3) - 0.01
    assert drop.last("train", "loss", 3) > 2 * drop.last("train_eval", "loss", 3)
    # BatchNorm: batch statistics in train mode, running averages in eval mode.
    assert bn.last("train", "loss", 3) > bn.last("train_eval", "loss", 3)
    assert bn.last("val", "loss") < plain.last("val", "loss")
    for r in (plain, bn, drop):
        assert r.last("val", "accuracy") > 0.95
        assert r.diagnosis.findings == () or all(
            f.severity != "error" for f in r.diagnosis.findings
        )
