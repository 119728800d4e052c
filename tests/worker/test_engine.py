"""The training loop as a plain function: phases, honest statistics, checkpoints, resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support import digits_spec, sine_spec
from trainrun.artifacts import load_model, read_tensors, save_model, write_tensors
from trainrun.figures import derive
from trainrun.planning import prepare_data
from trainrun.spec import JobSpec
from worker.engine import Hooks, JobFailure, Stopped, train
from worker.engine.loop import TrainResult, evaluate
from worker.engine.metrics import PhaseStats, tie_aware_hits
from worker.engine.state import TrainState

Rows = dict[int, dict[str, dict[str, Any]]]


def run(spec_dict: dict[str, Any], **hook_args: Any) -> tuple[Rows, TrainResult]:
    spec = JobSpec.model_validate(spec_dict)
    rows: Rows = {}

    def on_epoch(epoch: int, figures: dict[str, dict[str, Any]]) -> None:
        rows.setdefault(epoch, {}).update(figures)

    result = train(spec, prepare_data(spec), Hooks(on_epoch, **hook_args))
    return rows, result


def _strip_time(rows: Rows) -> Rows:
    return {
        e: {p: {k: v for k, v in r.items() if k != "seconds"} for p, r in f.items()}
        for e, f in rows.items()
    }


def test_every_epoch_has_three_phases_over_the_whole_sets() -> None:
    rows, _ = run(sine_spec(epochs=3))
    spec = JobSpec.model_validate(sine_spec())
    split = prepare_data(spec)
    assert sorted(rows) == [1, 2, 3]
    for figures in rows.values():
        assert set(figures) == {"train", "train_eval", "val"}
        assert figures["train"]["n"] == figures["train_eval"]["n"] == len(split.train)
        assert figures["val"]["n"] == len(split.val)


def test_same_spec_and_seed_give_identical_figures_on_cpu() -> None:
    first, _ = run(sine_spec(epochs=3))
    second, _ = run(sine_spec(epochs=3))
    assert _strip_time(first) == _strip_time(second)


def test_a_short_last_batch_weighs_by_its_samples() -> None:
    """An eval pass in batches of 7 gives the same loss as one full batch (no mean of means)."""
    spec = JobSpec.model_validate(digits_spec(epochs=1))
    _, result = run(digits_spec(epochs=1))
    from trainrun.objectives import bind_objective
    from worker.engine.data import DeviceTable

    split = prepare_data(spec)
    table = DeviceTable.from_table(split.val, torch.device("cpu"))
    objective = bind_objective(spec.loss, split.train, 10)
    small = evaluate(result.model, table, objective, 7, 0.0, lambda: None).figures(0)
    whole = evaluate(result.model, table, objective, 100_000, 0.0, lambda: None).figures(0)
    assert small["n"] == whole["n"] == len(split.val)
    assert math.isclose(small["loss_sum"], whole["loss_sum"], rel_tol=1e-6)
    assert math.isclose(small["correct"], whole["correct"])


def test_ties_earn_one_over_k() -> None:
    out = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 3.0, 1.0], [5.0, 0.0, 5.0]])
    y = torch.tensor([0, 2, 1, 1])
    hits, tied = tie_aware_hits(out, y, 0.0)
    assert hits.tolist() == pytest.approx([0.5, 1 / 3, 1.0, 0.0])
    assert tied.tolist() == [True, True, False, True]


def test_a_constant_output_scores_chance_never_99_percent() -> None:
    """Seed 002: all-zero logits must not count as hits."""
    stats = PhaseStats("classification", torch.device("cpu"))
    y = torch.randint(0, 10, (1000,))
    out = torch.zeros(1000, 10)
    stats.add(out, y, torch.zeros(1000))
    figures = derive(stats.figures(0))
    assert figures["accuracy"] == pytest.approx(0.1)
    assert figures["tie_rate"] == 1.0


def test_penalty_is_its_own_series_and_loss_stays_the_data_term() -> None:
    spec_dict = digits_spec(epochs=1, regularization={"l2": 0.01})
    rows, result = run(spec_dict)
    split = prepare_data(JobSpec.model_validate(spec_dict))
    model = result.model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(split.val.x))
        data_term = torch.nn.functional.cross_entropy(out, torch.from_numpy(split.val.y))
        l2 = 0.01 * sum((p * p).sum() for p in model.parameters() if p.dim() > 1)
    val = derive(rows[1]["val"])
    assert val["loss"] == pytest.approx(float(data_term), rel=1e-5)
    assert val["penalty"] == pytest.approx(float(l2), rel=1e-5)
    assert rows[1]["train"]["penalty"] > 0
    plain, _ = run(digits_spec(epochs=1))
    assert plain[1]["train"]["penalty"] == 0


def test_bce_on_raw_scores_fails_with_an_actionable_message() -> None:
    spec = sine_spec(epochs=1)
    spec["model"]["layers"] = spec["model"]["layers"][:-1]  # drop the hardsigmoid
    spec["model"]["layers"][-1] = {"linear": {"out_features": 2}}
    with pytest.raises(JobFailure, match="probabilities in \\[0, 1\\]"):
        run(spec)


def test_divergence_names_the_epoch_and_phase() -> None:
    spec = digits_spec(epochs=3, optimizer={"kind": "sgd", "lr": 1e12})
    with pytest.raises(JobFailure, match=r"diverged: the train loss is .* at epoch"):
        run(spec)


def test_should_stop_is_polled_between_batches() -> None:
    calls = {"n": 0}

    def stop_after_three() -> str | None:
        calls["n"] += 1
        return "cancel" if calls["n"] > 3 else None

    with pytest.raises(Stopped) as info:
        run(sine_spec(epochs=5), should_stop=stop_after_three)
    assert info.value.reason == "cancel"


def test_early_stopping_restores_the_best_weights_for_test() -> None:
    spec = digits_spec(
        epochs=60,
        optimizer={"kind": "adam", "lr": 0.05},
        data={
            "source": "digits",
            "standardize": True,
            "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        },
        training={
            "epochs": 60,
            "batch_size": 64,
            "early_stopping": {"monitor": "val.loss", "patience": 3},
        },
    )
    rows, result = run(spec)
    assert result.stopped_early and result.epochs_run < 60
    val_losses = {e: derive(f["val"])["loss"] for e, f in rows.items() if "val" in f}
    assert result.best_epoch == min(val_losses, key=lambda e: val_losses[e])  # type: ignore[arg-type, return-value]
    assert "test" in rows[result.best_epoch]


@pytest.mark.parametrize(
    "scheduler",
    [
        {"kind": "step", "step_size": 1, "gamma": 0.5},
        {"kind": "cosine"},
        {"kind": "onecycle", "max_lr": 0.01},
    ],
)
def test_schedulers_run(scheduler: dict[str, Any]) -> None:
    rows, _ = run(digits_spec(epochs=2, scheduler=scheduler))
    assert sorted(rows) == [1, 2]


def test_resume_from_a_checkpoint_gives_the_uninterrupted_figures(tmp_path: Path) -> None:
    """Kill after epoch 3, resume from its checkpoint file: epochs 4-6 match a clean run."""
    spec = sine_spec(
        epochs=6,
        scheduler={"kind": "step", "step_size": 2, "gamma": 0.5},
        training={
            "epochs": 6,
            "batch_size": 256,
            "early_stopping": {"monitor": "val.accuracy", "patience": 10},
        },
    )
    clean, _ = run(spec)
    path = tmp_path / "ckpt.safetensors"

    def save(state: TrainState) -> None:
        if state.epoch == 3:
            write_tensors(path, state.tensors, state.meta)

    def stop_after_epoch_three() -> str | None:
        return "drain" if path.exists() else None

    with pytest.raises(Stopped):
        run(spec, on_checkpoint=save, should_stop=stop_after_epoch_three)
    tensors, meta = read_tensors(path)
    resumed, _ = run(spec, resume=TrainState(tensors, meta))
    assert sorted(resumed) == [4, 5, 6]
    for epoch in (4, 5, 6):
        for phase in ("train", "train_eval", "val"):
            for key in ("loss_sum", "correct"):
                assert resumed[epoch][phase][key] == pytest.approx(
                    clean[epoch][phase][key], rel=1e-6
                )


def test_a_model_file_rebuilds_the_module_alone(tmp_path: Path) -> None:
    spec_dict = digits_spec(epochs=1)
    _, result = run(spec_dict)
    path = tmp_path / "model.safetensors"
    spec = JobSpec.model_validate(spec_dict).model_dump(mode="json")
    save_model(path, result.model, spec, result.input_shape, result.output_width, 1)
    loaded = load_model(path)
    x = torch.randn(5, 64)
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


def test_train_eval_every_k_epochs_and_always_on_the_last() -> None:
    rows, _ = run(sine_spec(epochs=5, evaluation={"train_eval": {"every": 2}}))
    assert [e for e in sorted(rows) if "train_eval" in rows[e]] == [1, 3, 5]
    assert all("val" in rows[e] and "train" in rows[e] for e in rows)


def test_train_eval_on_a_fixed_seeded_subset() -> None:
    spec = sine_spec(epochs=3, evaluation={"train_eval": {"subset": 300}})
    rows, _ = run(spec)
    assert {rows[e]["train_eval"]["n"] for e in rows} == {300}
    again, _ = run(spec)  # the same rows each time: same seed, same subset, same figures
    assert [again[e]["train_eval"]["loss_sum"] for e in (1, 2, 3)] == [
        rows[e]["train_eval"]["loss_sum"] for e in (1, 2, 3)
    ]
