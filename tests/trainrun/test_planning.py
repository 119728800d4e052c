"""Dry build at submit: parameter count, shape and loss checks with the path into the spec."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from tests.support import digits_spec, sine_spec
from trainrun.errors import SpecError
from trainrun.planning import plan_job
from trainrun.settings import Limits
from trainrun.spec import JobSpec

LIMITS = Limits()


def plan(raw: dict[str, Any], limits: Limits = LIMITS) -> Any:
    return plan_job(JobSpec.model_validate(raw), limits)


def spec_error(raw: dict[str, Any], limits: Limits = LIMITS) -> SpecError:
    with pytest.raises(SpecError) as info:
        plan(raw, limits)
    return info.value


def sine_with_layers(layers: list[Any], **overrides: Any) -> dict[str, Any]:
    spec = sine_spec(**overrides)
    spec["model"]["layers"] = layers
    return spec


def test_seed_000_network_has_295_parameters() -> None:
    # Counted independently: the same network written out in torch.
    reference = nn.Sequential(
        nn.Conv1d(1, 1, kernel_size=10),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(150 - 10 + 1, 2),
        nn.Hardsigmoid(),
    )
    assert reference(torch.zeros(2, 1, 150)).shape == (2, 2)
    expected = sum(p.numel() for p in reference.parameters())
    assert expected == (10 + 1) + (141 * 2 + 2) == 295

    result = plan(sine_spec())
    assert result.parameter_count == expected
    assert result.input_shape == (1, 150)
    assert result.output_width == 2
    assert result.task == "classification"
    assert result.n_classes == 2


def test_rows_follow_the_split() -> None:
    # 5000 points, window 150: 5000 - 150 - 1 windows.
    result = plan(sine_spec())
    assert result.rows["train"] + result.rows["val"] == 4849
    assert abs(result.rows["train"] - result.rows["val"]) <= 1
    spec = sine_spec()
    spec["data"]["split"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    rows = plan(spec).rows
    assert set(rows) == {"train", "val", "test"}
    assert sum(rows.values()) == 4849


def test_mlp_parameter_count_on_digits() -> None:
    # 64 -> 32 -> 10: (64*32 + 32) + (32*10 + 10)
    assert plan(digits_spec()).parameter_count == 64 * 32 + 32 + 32 * 10 + 10


def test_mlp_on_regression_data_outputs_the_target_width() -> None:
    raw = {"name": "r", "data": {"source": "diabetes"}, "model": {"kind": "mlp", "hidden": [8]}}
    result = plan({**raw, "loss": {"kind": "mse"}})
    assert (result.task, result.output_width, result.input_shape) == ("regression", 1, (10,))
    assert result.parameter_count == 10 * 8 + 8 + 8 + 1


@pytest.mark.parametrize(
    ("layers", "loc", "words"),
    [
        (
            [
                "flatten",
                {"conv1d": {"out_channels": 1, "kernel_size": 3}},
                "flatten",
                {"linear": 2},
            ],
            ("model", "layers", 1, "conv1d"),
            "rank 2",
        ),
        (
            [{"conv1d": {"out_channels": 1, "kernel_size": 500}}, "flatten", {"linear": 2}],
            ("model", "layers", 0, "conv1d"),
            "[1, 150]",
        ),
        (
            [{"conv2d": {"out_channels": 1, "kernel_size": 3}}, "flatten", {"linear": 2}],
            ("model", "layers", 0, "conv2d"),
            "rank 3",
        ),
        (
            [{"conv1d": {"out_channels": 4, "kernel_size": 3}}, "relu", {"maxpool2d": 2}],
            ("model", "layers", 2, "maxpool2d"),
            "rank 3",
        ),
        (
            ["flatten", {"linear": 2}, {"softmax": 1}],
            ("model", "layers", 2, "softmax"),
            "dim 1",
        ),
    ],
    ids=["conv1d-after-flatten", "kernel-too-big", "conv2d-on-1d", "pool-rank", "softmax-dim"],
)
def test_shape_mismatch_names_the_layer_path(
    layers: list[Any], loc: tuple[Any, ...], words: str
) -> None:
    error = spec_error(sine_with_layers(layers))
    assert error.loc == loc
    assert words in error.message


def test_bce_on_a_regression_dataset_is_rejected_at_loss_kind() -> None:
    raw = sine_spec(data={"source": "diabetes"}, model={"kind": "mlp"}, loss={"kind": "bce"})
    error = spec_error(raw)
    assert error.loc == ("loss", "kind")
    assert "regression" in error.message
    assert "mse" in error.message  # suggests the losses that fit


def test_cross_entropy_on_a_regression_dataset_is_rejected() -> None:
    raw = digits_spec(data={"source": "diabetes"})
    assert spec_error(raw).loc == ("loss", "kind")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (sine_with_layers(["flatten", {"linear": 3}, "hardsigmoid"]), "[2] or [1]"),
        (sine_with_layers([{"conv1d": {"out_channels": 1, "kernel_size": 10}}, "flatten"]), "[2]"),
        (sine_with_layers([{"conv1d": {"out_channels": 2, "kernel_size": 10}}]), "[2]"),
        (digits_spec(model={"kind": "mlp", "hidden": [8], "out_features": 3}), "[10]"),
    ],
    ids=["linear-3-for-bce", "flat-141", "rank-2-output", "mlp-out-3-for-10-classes"],
)
def test_model_output_width_must_fit_the_loss(raw: dict[str, Any], want: str) -> None:
    error = spec_error(raw)
    assert error.loc == ("model",)
    assert want in error.message


def test_single_output_is_accepted_for_binary_bce() -> None:
    raw = sine_with_layers(["flatten", {"linear": 1}, "sigmoid"])
    assert plan(raw).output_width == 1


def test_epochs_over_the_limit() -> None:
    limits = Limits(max_epochs=10)
    assert plan(sine_spec(epochs=10), limits).parameter_count == 295
    error = spec_error(sine_spec(epochs=11), limits)
    assert error.loc == ("training", "epochs")
    assert "10" in error.message


def test_batch_size_over_the_limit() -> None:
    error = spec_error(sine_spec(training={"batch_size": 65}), Limits(max_batch_size=64))
    assert error.loc == ("training", "batch_size")


def test_parameter_limit() -> None:
    assert plan(sine_spec(), Limits(max_parameters=295)).parameter_count == 295
    error = spec_error(sine_spec(), Limits(max_parameters=294))
    assert error.loc == ("model",)
    assert "295" in error.message


def test_dry_build_allocates_no_weights() -> None:
    # ~10^10 parameters (40 GB in fp32) would not fit in memory: it is counted, not allocated.
    huge = sine_with_layers(["flatten", {"linear": 100_000}, {"linear": 100_000}, {"linear": 2}])
    expected = (150 * 100_000 + 100_000) + (100_000 * 100_000 + 100_000) + (100_000 * 2 + 2)
    error = spec_error(huge)
    assert error.loc == ("model",)
    assert f"{expected:,} parameters" in error.message
