"""Model kinds (``sequential``, ``mlp``) and the builder that turns a model spec into a module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from models.layers import ACTIVATIONS, LAYERS, Shape, ShapeError
from trainrun.catalog import (
    Catalog,
    NamedEntry,
    Params,
    single_key_union,
)


class BuildError(ValueError):
    """The spec names a valid model that cannot take this data; ``loc`` is relative to ``model``."""

    def __init__(self, loc: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.loc = tuple(loc)
        self.message = message


@dataclass(frozen=True)
class BuildContext:
    input_shape: Shape  # one sample, no batch dimension
    output_dim: int  # the width the loss expects per sample


@dataclass
class Built:
    module: nn.Module
    output_shape: Shape


ModelBuilder = Callable[[Any, BuildContext], Built]
MODELS: Catalog[ModelBuilder] = Catalog("model")

if TYPE_CHECKING:
    LayerSpec = NamedEntry
else:
    LayerSpec = single_key_union(LAYERS)


def _output_shape(module: nn.Module, shape: Shape) -> Shape:
    """A two-row pass through the freshly built layer, on the device it was built on (the meta
    device in a dry build), in eval mode without autograd: no random draws, no BatchNorm
    update, and no second build of the layer."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return tuple(module(torch.empty((2, *shape))).shape[1:])
    finally:
        module.train(was_training)


def build_layers(layers: Sequence[NamedEntry], input_shape: Shape, loc: str = "layers") -> Built:
    """Build layer by layer, each input size inferred from a probe of the last layer's output.
    A dry build (the API's check of a spec) runs under ``torch.device("meta")``: no memory."""
    modules: list[nn.Module] = []
    shape = input_shape
    for i, layer in enumerate(layers):
        entry = LAYERS[layer.name]
        try:
            module = entry.build(layer.params, shape)
            out_shape = shape if entry.info.get("keeps_shape") else _output_shape(module, shape)
        except ShapeError as exc:
            raise BuildError((loc, i, layer.name), str(exc)) from None
        except RuntimeError as exc:  # torch's own shape complaints
            msg = str(exc).splitlines()[0]
            raise BuildError(
                (loc, i, layer.name), f"cannot take input {list(shape)}: {msg}"
            ) from None
        modules.append(module)
        shape = out_shape
        if 0 in shape:
            raise BuildError((loc, i, layer.name), f"output would be empty for input {list(shape)}")
    return Built(nn.Sequential(*modules), shape)


class SequentialParams(Params):
    layers: list[LayerSpec] = Field(min_length=1)


@MODELS.register("sequential", SequentialParams)
def _sequential(p: SequentialParams, ctx: BuildContext) -> Built:
    """A plain list of layers; input sizes are inferred."""
    return build_layers(p.layers, ctx.input_shape)


Activation = Literal[
    "relu", "elu", "gelu", "tanh", "sigmoid", "hardsigmoid", "leaky_relu", "softmax"
]
assert set(ACTIVATIONS) == set(Activation.__args__)  # type: ignore[attr-defined]


class MlpParams(Params):
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64], description="hidden layer widths"
    )
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    batchnorm: bool = False
    input_batchnorm: bool = False
    output_activation: Activation | None = None
    out_features: int | None = Field(
        default=None, gt=0, description="default: what the loss expects"
    )


def mlp_layers(p: MlpParams, input_rank: int, output_dim: int) -> list[NamedEntry]:
    """The layer list an ``mlp`` preset stands for."""
    names: list[tuple[str, dict[str, Any]]] = []
    if input_rank > 1:
        names.append(("flatten", {}))
    if p.input_batchnorm:
        names.append(("batchnorm1d", {}))
    for width in p.hidden:
        names.append(("linear", {"out_features": width}))
        if p.batchnorm:
            names.append(("batchnorm1d", {}))
        names.append((p.activation, {}))
        if p.dropout > 0:
            names.append(("dropout", {"p": p.dropout}))
    names.append(("linear", {"out_features": p.out_features or output_dim}))
    if p.output_activation:
        names.append((p.output_activation, {}))
    return [NamedEntry(name=n, params=LAYERS[n].params.model_validate(kw)) for n, kw in names]


@MODELS.register("mlp", MlpParams)
def _mlp(p: MlpParams, ctx: BuildContext) -> Built:
    """Fully connected network: hidden layers with activation, optional BatchNorm and dropout."""
    return build_layers(
        mlp_layers(p, len(ctx.input_shape), ctx.output_dim), ctx.input_shape, loc="hidden"
    )


def build_model(spec: Any, ctx: BuildContext) -> Built:
    """Build the module a model spec describes on the current default device."""
    return MODELS[spec.kind].build(spec, ctx)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
