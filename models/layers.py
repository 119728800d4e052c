"""The layer catalogue: each entry is a params schema and a builder that infers input sizes.

A builder receives its params and the shape of one input sample (no batch dimension) and
returns a module; output shapes are found by running the module on two rows (on the meta
device in a dry build), except for entries registered with ``keeps_shape=True``, whose output
has the input's shape (running some of them on the meta device costs milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field
from torch import nn

from trainrun.catalog import Catalog, NoParams, Params

Shape = tuple[int, ...]
LayerBuilder = Callable[[Any, Shape], nn.Module]

LAYERS: Catalog[LayerBuilder] = Catalog("layer")


class ShapeError(ValueError):
    """The layer cannot take an input of this shape."""


def _need_rank(shape: Shape, rank: int, what: str) -> None:
    if len(shape) != rank:
        raise ShapeError(f"{what} needs input of rank {rank} per sample, got shape {list(shape)}")


class LinearParams(Params):
    out_features: int = Field(gt=0)
    bias: bool = True


@LAYERS.register("linear", LinearParams, shorthand="out_features")
def _linear(p: LinearParams, shape: Shape) -> nn.Module:
    """Fully connected layer over the last dimension."""
    return nn.Linear(shape[-1], p.out_features, bias=p.bias)


class ConvParams(Params):
    out_channels: int = Field(gt=0)
    kernel_size: int = Field(gt=0)
    stride: int = Field(default=1, gt=0)
    padding: int | Literal["same", "valid"] = 0
    dilation: int = Field(default=1, gt=0)
    bias: bool = True


@LAYERS.register("conv1d", ConvParams)
def _conv1d(p: ConvParams, shape: Shape) -> nn.Module:
    """1-d convolution over (C, L) samples."""
    _need_rank(shape, 2, "conv1d")
    return nn.Conv1d(
        shape[0], p.out_channels, p.kernel_size, p.stride, p.padding, p.dilation, bias=p.bias
    )


@LAYERS.register("conv2d", ConvParams)
def _conv2d(p: ConvParams, shape: Shape) -> nn.Module:
    """2-d convolution over (C, H, W) samples."""
    _need_rank(shape, 3, "conv2d")
    return nn.Conv2d(
        shape[0], p.out_channels, p.kernel_size, p.stride, p.padding, p.dilation, bias=p.bias
    )


class BatchNormParams(Params):
    momentum: float = Field(default=0.1, ge=0, le=1)
    eps: float = Field(default=1e-5, gt=0)
    affine: bool = True


@LAYERS.register("batchnorm1d", BatchNormParams, keeps_shape=True)
def _batchnorm1d(p: BatchNormParams, shape: Shape) -> nn.Module:
    """Batch normalisation over features (F,) or channels of (C, L)."""
    if len(shape) not in (1, 2):
        raise ShapeError(f"batchnorm1d needs (F,) or (C, L) samples, got {list(shape)}")
    return nn.BatchNorm1d(shape[0], eps=p.eps, momentum=p.momentum, affine=p.affine)


@LAYERS.register("batchnorm2d", BatchNormParams, keeps_shape=True)
def _batchnorm2d(p: BatchNormParams, shape: Shape) -> nn.Module:
    """Batch normalisation over the channels of (C, H, W) samples."""
    _need_rank(shape, 3, "batchnorm2d")
    return nn.BatchNorm2d(shape[0], eps=p.eps, momentum=p.momentum, affine=p.affine)


class DropoutParams(Params):
    p: float = Field(ge=0, lt=1)


@LAYERS.register("dropout", DropoutParams, shorthand="p", keeps_shape=True)
def _dropout(p: DropoutParams, shape: Shape) -> nn.Module:
    """Inverted dropout: active in train mode only, rescaled by 1/(1-p)."""
    return nn.Dropout(p.p)


def _simple(name: str, factory: Callable[[], nn.Module], doc: str) -> None:
    def build(p: Params, shape: Shape) -> nn.Module:
        return factory()

    build.__doc__ = doc
    LAYERS.register(name, NoParams, keeps_shape=True)(build)


_simple("relu", nn.ReLU, "max(0, x)")
_simple("gelu", nn.GELU, "Gaussian error linear unit")
_simple("tanh", nn.Tanh, "hyperbolic tangent")
_simple("sigmoid", nn.Sigmoid, "logistic sigmoid, outputs in (0, 1)")
_simple("hardsigmoid", nn.Hardsigmoid, "piecewise-linear sigmoid, outputs in [0, 1]")


class EluParams(Params):
    alpha: float = Field(default=1.0, gt=0)


@LAYERS.register("elu", EluParams, shorthand="alpha", keeps_shape=True)
def _elu(p: EluParams, shape: Shape) -> nn.Module:
    """Exponential linear unit."""
    return nn.ELU(p.alpha)


class LeakyReluParams(Params):
    negative_slope: float = Field(default=0.01, ge=0)


@LAYERS.register("leaky_relu", LeakyReluParams, shorthand="negative_slope", keeps_shape=True)
def _leaky_relu(p: LeakyReluParams, shape: Shape) -> nn.Module:
    """ReLU with a small slope below zero."""
    return nn.LeakyReLU(p.negative_slope)


class SoftmaxParams(Params):
    dim: int = -1


@LAYERS.register("softmax", SoftmaxParams, shorthand="dim", keeps_shape=True)
def _softmax(p: SoftmaxParams, shape: Shape) -> nn.Module:
    """Softmax over one dimension of the sample (the last by default)."""
    if not -len(shape) <= p.dim < len(shape):
        raise ShapeError(f"softmax dim {p.dim} is outside a sample of shape {list(shape)}")
    return nn.Softmax(dim=p.dim if p.dim < 0 else p.dim + 1)


@LAYERS.register("flatten", NoParams)
def _flatten(p: Params, shape: Shape) -> nn.Module:
    """Flatten each sample to one dimension."""
    return nn.Flatten()


class PoolParams(Params):
    kernel_size: int = Field(gt=0)
    stride: int | None = Field(default=None, gt=0)
    padding: int = Field(default=0, ge=0)


def _pool(name: str, cls: Callable[..., nn.Module], rank: int, doc: str) -> None:
    def build(p: PoolParams, shape: Shape) -> nn.Module:
        _need_rank(shape, rank, name)
        return cls(p.kernel_size, p.stride, p.padding)

    build.__doc__ = doc
    LAYERS.register(name, PoolParams, shorthand="kernel_size")(build)


_pool("maxpool1d", nn.MaxPool1d, 2, "max pooling over (C, L)")
_pool("maxpool2d", nn.MaxPool2d, 3, "max pooling over (C, H, W)")
_pool("avgpool1d", nn.AvgPool1d, 2, "average pooling over (C, L)")
_pool("avgpool2d", nn.AvgPool2d, 3, "average pooling over (C, H, W)")

ACTIVATIONS = ("relu", "elu", "gelu", "tanh", "sigmoid", "hardsigmoid", "leaky_relu", "softmax")


def numel(shape: Shape) -> int:
    return math.prod(shape)
