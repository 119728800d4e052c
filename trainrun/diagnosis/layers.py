"""What the spec says about the model: its train-mode layers, final activation, output width."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.layers import ACTIVATIONS
from trainrun.spec import JobSpec

WEIGHT_LAYERS = ("linear", "conv1d", "conv2d")


@dataclass(frozen=True)
class TrainModeLayer:
    path: str  # where in the spec: model.layers[2], model.dropout
    kind: str  # dropout | batchnorm
    detail: str  # for people: "dropout p=0.5"


def spec_layers(spec: JobSpec) -> list[Any]:
    """The explicit layer list of a ``sequential`` model; presets have none."""
    return list(getattr(spec.model, "layers", None) or [])


def train_mode_layers(spec: JobSpec) -> list[TrainModeLayer]:
    """Layers that behave differently in train and eval mode, with their place in the spec."""
    found: list[TrainModeLayer] = []
    for i, layer in enumerate(spec_layers(spec)):
        if layer.name == "dropout":
            p = layer.params.p
            found.append(TrainModeLayer(f"model.layers[{i}]", "dropout", f"dropout p={p:g}"))
        elif layer.name.startswith("batchnorm"):
            found.append(TrainModeLayer(f"model.layers[{i}]", "batchnorm", layer.name))
    # Presets: name their options, which is what a person edits, not the layers they expand to.
    model = spec.model
    if getattr(model, "kind", None) == "mlp":
        found += _mlp_options(model)
    elif getattr(model, "kind", None) == "cnn1d":
        found += _cnn1d_options(model)
    return found


def _mlp_options(model: Any) -> list[TrainModeLayer]:
    found: list[TrainModeLayer] = []
    count = f"each of the {len(model.hidden)} hidden layers"
    if model.input_batchnorm:
        detail = "BatchNorm on the inputs"
        found.append(TrainModeLayer("model.input_batchnorm", "batchnorm", detail))
    if model.batchnorm:
        found.append(TrainModeLayer("model.batchnorm", "batchnorm", f"BatchNorm after {count}"))
    if model.dropout > 0:
        detail = f"dropout p={model.dropout:g} after {count}"
        found.append(TrainModeLayer("model.dropout", "dropout", detail))
    return found


def _cnn1d_options(model: Any) -> list[TrainModeLayer]:
    """``cnn1d`` has no BatchNorm; its dropout follows every conv block and every head layer."""
    if model.dropout <= 0:
        return []
    blocks = "the conv block" if model.blocks == 1 else f"each of the {model.blocks} conv blocks"
    head = (
        "the linear head"
        if model.fc_blocks == 1
        else f"each of the {model.fc_blocks} linear layers of the head"
    )
    detail = f"dropout p={model.dropout:g} after {blocks} and {head}"
    return [TrainModeLayer("model.dropout", "dropout", detail)]


def final_activation(spec: JobSpec) -> tuple[str, str] | None:
    """(path, name) of an activation placed after the model's last weight layer, if any."""
    layers = spec_layers(spec)
    last = max((i for i, layer in enumerate(layers) if layer.name in WEIGHT_LAYERS), default=None)
    if last is not None:
        for i in range(last + 1, len(layers)):
            if layers[i].name in ACTIVATIONS:
                return f"model.layers[{i}]", layers[i].name
    out = getattr(spec.model, "output_activation", None)
    if out:
        return "model.output_activation", str(out)
    return None


def output_width(spec: JobSpec) -> int | None:
    """The model's number of outputs when the spec fixes it; None for a conv output."""
    for layer in reversed(spec_layers(spec)):
        if layer.name == "linear":
            return int(layer.params.out_features)
        if layer.name in WEIGHT_LAYERS:
            return None
    width = getattr(spec.model, "out_features", None)
    return int(width) if width else None
