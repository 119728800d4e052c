"""Model builders: input sizes inferred, presets expand to the layers they stand for."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from models import LAYERS, BuildContext, BuildError, ModelSpec, build_model, count_parameters

SPEC: TypeAdapter[object] = TypeAdapter(ModelSpec)


def build(spec: Mapping[str, object], shape: tuple[int, ...], width: int) -> nn.Sequential:
    module = build_model(SPEC.validate_python(spec), BuildContext(shape, width)).module
    assert isinstance(module, nn.Sequential)
    return module


def test_cnn1d_is_seed_000s_network() -> None:
    """SimpleCNN1d(1, 1, 2 blocks, k=10, dropout .5) + FC_classifier(132 -> 2) + hardsigmoid."""
    module = build({"kind": "cnn1d", "dropout": 0.5}, (1, 150), 2)
    kinds = [type(m).__name__ for m in module]
    assert kinds == ["Conv1d", "ReLU", "Dropout", "Conv1d", "ReLU", "Dropout", "Flatten",
                     "Linear", "Dropout", "Hardsigmoid"]  # fmt: skip
    assert module[7].in_features == 150 - 2 * (10 - 1)
    assert count_parameters(module) == 2 * (10 + 1) + (132 * 2 + 2)
    assert module(torch.randn(4, 1, 150)).shape == (4, 2)


def test_mlp_preset_expands_with_batchnorm_and_dropout() -> None:
    module = build(
        {"kind": "mlp", "hidden": [16, 8], "dropout": 0.2, "batchnorm": True,
         "input_batchnorm": True, "output_activation": "sigmoid"},
        (2, 4), 3,
    )  # fmt: skip
    kinds = [type(m).__name__ for m in module]
    assert kinds == ["Flatten", "BatchNorm1d", "Linear", "BatchNorm1d", "ReLU", "Dropout",
                     "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "Sigmoid"]  # fmt: skip
    assert module[2].in_features == 8


@pytest.mark.parametrize("entry", list(LAYERS), ids=lambda e: e.name)
def test_every_layer_builds_on_some_input(entry: object) -> None:
    """Each catalogue entry takes at least one of a vector, a sequence or an image."""
    name = entry.name  # type: ignore[attr-defined]
    built = False
    for shape in ((8,), (2, 16), (2, 16, 16)):
        for raw in ({}, {"out_channels": 3, "kernel_size": 3}, {"out_features": 3},
                    {"kernel_size": 2}, {"p": 0.5}):  # fmt: skip
            try:
                spec = {"kind": "sequential", "layers": [{name: raw}]}
                module = build(spec, shape, 1)
            except (ValueError, BuildError):
                continue
            module.eval()
            assert module(torch.randn(2, *shape)).shape[0] == 2
            built = True
            break
        if built:
            break
    assert built, name


def test_a_layer_that_cannot_take_its_input_names_itself() -> None:
    with pytest.raises(BuildError) as info:
        build({"kind": "sequential", "layers": ["flatten", {"conv1d": {"out_channels": 1,
               "kernel_size": 3}}]}, (1, 10), 1)  # fmt: skip
    assert info.value.loc == ("layers", 1, "conv1d")
