"""The ``cnn1d`` preset: seed 000's convolution blocks followed by a fully connected head."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from models.build import MODELS, Activation, BuildContext, Built, build_layers
from models.layers import LAYERS
from trainrun.catalog import NamedEntry, Params


class Cnn1dParams(Params):
    blocks: int = Field(default=2, ge=1, le=32, description="conv1d -> relu (-> dropout) blocks")
    channels: int = Field(default=1, ge=1)
    kernel_size: int = Field(default=10, ge=1)
    stride: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1, description="after each block and FC layer")
    fc_blocks: int = Field(default=1, ge=1, le=8, description="linear layers, halving the width")
    output_activation: Activation | None = "hardsigmoid"
    out_features: int | None = Field(
        default=None, gt=0, description="default: what the loss expects"
    )


def _entries(names: list[tuple[str, dict[str, Any]]]) -> list[NamedEntry]:
    return [NamedEntry(name=n, params=LAYERS[n].params.model_validate(kw)) for n, kw in names]


def conv_layers(p: Cnn1dParams) -> list[NamedEntry]:
    names: list[tuple[str, dict[str, Any]]] = []
    for _ in range(p.blocks):
        conv = {"out_channels": p.channels, "kernel_size": p.kernel_size, "stride": p.stride}
        names += [("conv1d", conv), ("relu", {})]
        if p.dropout > 0:
            names.append(("dropout", {"p": p.dropout}))
    return _entries(names)


def head_layers(p: Cnn1dParams, flat_width: int, output_dim: int) -> list[NamedEntry]:
    """Flatten, then linear layers halving the width down to the output."""
    out = p.out_features or output_dim
    names: list[tuple[str, dict[str, Any]]] = [("flatten", {})]
    width = flat_width
    for i in range(p.fc_blocks):
        width = out if i == p.fc_blocks - 1 else max(width // 2, out)
        names.append(("linear", {"out_features": width}))
        if p.dropout > 0:
            names.append(("dropout", {"p": p.dropout}))
    if p.output_activation:
        names.append((p.output_activation, {}))
    return _entries(names)


@MODELS.register("cnn1d", Cnn1dParams)
def _cnn1d(p: Cnn1dParams, ctx: BuildContext) -> Built:
    """Seed 000's network: 1-d convolution blocks with dropout, then a linear head."""
    convs = conv_layers(p)
    with torch.device("meta"):  # only the shape after the convolutions is needed here
        flat = math.prod(build_layers(convs, ctx.input_shape).output_shape)
    return build_layers(convs + head_layers(p, flat, ctx.output_dim), ctx.input_shape)
