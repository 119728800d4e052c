"""JobSpec validation: exact error paths, catalogue names in messages, shorthands, round trip."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from models import LAYERS, MODELS
from tests.support import digits_spec, sine_spec
from trainrun.datasets import DATASETS
from trainrun.objectives import LOSSES
from trainrun.optim import OPTIMIZERS
from trainrun.spec import JobSpec

Loc = tuple[str | int, ...]


def errors_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(raw)
    return [dict(e) for e in info.value.errors()]


def only_error(raw: dict[str, Any]) -> dict[str, Any]:
    errors = errors_of(raw)
    assert len(errors) == 1, errors
    return errors[0]


def with_layer(index: int, layer: Any) -> dict[str, Any]:
    spec = sine_spec()
    spec["model"]["layers"][index] = layer
    return spec


def layers_of(layers: list[Any]) -> list[Any]:
    spec = sine_spec()
    spec["model"]["layers"] = layers
    return list(JobSpec.model_validate(spec).model.layers)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "loc"),
    [
        ((), ("colour",)),
        (("data",), ("data", "colour")),
        (("data", "params"), ("data", "params", "colour")),
        (("data", "split"), ("data", "split", "colour")),
        (("model",), ("model", "colour")),
        (("model", "layers", 0, "conv1d"), ("model", "layers", 0, "conv1d", "colour")),
        (("model", "layers", 2, "dropout"), ("model", "layers", 2, "dropout", "colour")),
        (("loss",), ("loss", "colour")),
        (("optimizer",), ("optimizer", "colour")),
        (("training",), ("training", "colour")),
        (("evaluation", "train_eval"), ("evaluation", "train_eval", "colour")),
        (("resources",), ("resources", "colour")),
    ],
)
def test_unknown_field_is_rejected_at_its_exact_path(path: Loc, loc: Loc) -> None:
    spec = sine_spec()
    spec["model"]["layers"][2] = {"dropout": {"p": 0.5}}  # long form, so it can take a field
    spec["evaluation"] = {"train_eval": {"every": 1}}
    spec["resources"] = {"device": "cpu"}
    target: Any = spec
    for key in path:
        target = target[key]
    target["colour"] = "red"

    error = only_error(spec)
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == loc


def test_bad_layer_param_names_the_layer_and_param() -> None:
    error = only_error(with_layer(2, {"dropout": {"p": 1.5}}))
    assert error["loc"] == ("model", "layers", 2, "dropout", "p")
    assert error["type"] == "less_than"


def test_bad_shorthand_value_is_reported_at_the_field_it_fills() -> None:
    error = only_error(with_layer(2, {"dropout": 1.5}))
    assert error["loc"] == ("model", "layers", 2, "dropout", "p")


def test_missing_required_layer_param() -> None:
    error = only_error(with_layer(0, {"conv1d": {"out_channels": 1}}))
    assert error["loc"] == ("model", "layers", 0, "conv1d", "kernel_size")
    assert error["type"] == "missing"


@pytest.mark.parametrize(
    ("mutate", "loc", "catalog_names"),
    [
        (lambda s: s["model"]["layers"].__setitem__(1, "swish"), ("model", "layers", 1), LAYERS),
        (
            lambda s: s["model"]["layers"].__setitem__(1, {"swish": {"beta": 1}}),
            ("model", "layers", 1),
            LAYERS,
        ),
        (lambda s: s["model"].__setitem__("kind", "resnet"), ("model", "kind"), MODELS),
        (lambda s: s["data"].__setitem__("source", "mnist"), ("data", "source"), DATASETS),
        (lambda s: s["loss"].__setitem__("kind", "nll"), ("loss", "kind"), LOSSES),
        (lambda s: s["optimizer"].__setitem__("kind", "lamb"), ("optimizer", "kind"), OPTIMIZERS),
    ],
    ids=["layer", "layer-object", "model", "dataset", "loss", "optimizer"],
)
def test_unknown_name_lists_the_catalogue(mutate: Any, loc: Loc, catalog_names: Any) -> None:
    spec = sine_spec()
    mutate(spec)
    error = only_error(spec)
    assert error["loc"] == loc
    assert error["type"] == f"unknown_{catalog_names.kind}"
    for name in catalog_names.names():
        assert name in error["msg"], (name, error["msg"])


def test_layer_with_two_keys_is_rejected() -> None:
    error = only_error(with_layer(1, {"relu": {}, "tanh": {}}))
    assert error["loc"] == ("model", "layers", 1)
    assert error["type"] == "layer_form"


def test_scalar_for_a_layer_without_shorthand_is_rejected() -> None:
    error = only_error(with_layer(0, {"conv1d": 3}))
    assert error["loc"][:4] == ("model", "layers", 0, "conv1d")


def test_shorthand_forms_equal_their_long_forms() -> None:
    short = layers_of(
        ["relu", {"dropout": 0.5}, {"linear": 2}, {"leaky_relu": 0.2}, {"tanh": None}]
    )
    long = layers_of(
        [
            {"relu": {}},
            {"dropout": {"p": 0.5}},
            {"linear": {"out_features": 2}},
            {"leaky_relu": {"negative_slope": 0.2}},
            {"tanh": {}},
        ]
    )
    assert short == long
    assert [layer.name for layer in short] == ["relu", "dropout", "linear", "leaky_relu", "tanh"]
    assert short[1].params.p == 0.5
    assert short[2].params.out_features == 2
    assert short[2].params.bias is True


def test_layers_dump_in_long_form() -> None:
    spec = JobSpec.model_validate(sine_spec())
    layers = spec.model_dump(mode="json")["model"]["layers"]
    assert layers[1] == {"relu": {}}
    assert layers[2] == {"dropout": {"p": 0.5}}
    assert layers[4] == {"linear": {"out_features": 2, "bias": True}}


@pytest.mark.parametrize(
    "split",
    [{"train": 0.5, "val": 0.4}, {"train": 0.6, "val": 0.3, "test": 0.2}, {"train": 0.9}],
)
def test_split_must_sum_to_one(split: dict[str, float]) -> None:
    spec = sine_spec()
    spec["data"]["split"] = split
    error = only_error(spec)
    assert error["loc"] == ("data", "split")
    assert "must be 1" in error["msg"]


def test_split_with_test_share_that_sums_to_one() -> None:
    spec = sine_spec()
    spec["data"]["split"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    split = JobSpec.model_validate(spec).data.split
    assert (split.train, split.val, split.test) == (0.6, 0.2, 0.2)


def test_version_defaults_to_1_and_only_1_is_accepted() -> None:
    assert JobSpec.model_validate(sine_spec()).version == 1
    assert JobSpec.model_validate(sine_spec(version=1)).version == 1
    error = only_error(sine_spec(version=2))
    assert error["loc"] == ("version",)


def test_defaults() -> None:
    raw = sine_spec()
    del raw["optimizer"], raw["training"]
    spec = JobSpec.model_validate(raw)
    assert spec.optimizer.kind == "adam"
    assert spec.optimizer.lr == pytest.approx(1e-3)  # type: ignore[attr-defined]
    assert spec.seed == 1
    assert spec.training.epochs == 10
    assert spec.regularization.l1 == spec.regularization.l2 == 0.0
    assert spec.evaluation.train_eval.every == 1
    assert spec.evaluation.eval_batch_size == "auto"
    assert spec.resources.device == "auto"
    assert spec.data.params.points == 5000  # type: ignore[attr-defined]
    assert JobSpec.model_validate(digits_spec()).data.split.train == 0.8


@pytest.mark.parametrize(
    ("field", "value", "loc"),
    [
        ("name", "", ("name",)),
        ("seed", -1, ("seed",)),
        ("training", {"epochs": 0}, ("training", "epochs")),
        ("evaluation", {"eval_batch_size": 0}, ("evaluation",)),
        ("regularization", {"l2": -0.1}, ("regularization", "l2")),
    ],
)
def test_out_of_range_values(field: str, value: Any, loc: Loc) -> None:
    assert only_error(sine_spec(**{field: value}))["loc"] == loc


def test_missing_tag_field() -> None:
    spec = sine_spec()
    del spec["loss"]["kind"]
    error = only_error(spec)
    assert error["loc"] == ("loss",)
    assert "'kind' is required" in error["msg"]


@pytest.mark.parametrize(
    "raw",
    [
        sine_spec(),
        digits_spec(),
        digits_spec(
            data={"source": "wine", "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
            model={"kind": "mlp", "hidden": [8, 4], "dropout": 0.1, "batchnorm": True},
            optimizer={"kind": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
            loss={"kind": "cross_entropy", "label_smoothing": 0.1},
            regularization={"l1": 1e-4, "l2": 1e-3},
            evaluation={"train_eval": {"every": 2, "subset": 50}, "eval_batch_size": 64},
            resources={"device": "cpu"},
        ),
        sine_spec(
            model={
                "kind": "sequential",
                "layers": [
                    {"conv1d": {"out_channels": 2, "kernel_size": 3, "padding": "same"}},
                    {"maxpool1d": 2},
                    {"elu": 0.5},
                    "flatten",
                    {"linear": 2},
                    {"softmax": -1},
                ],
            },
            loss={"kind": "mse"},
        ),
    ],
    ids=["sine", "digits", "wine-everything", "sine-shorthands"],
)
def test_round_trip_through_json(raw: dict[str, Any]) -> None:
    spec = JobSpec.model_validate(copy.deepcopy(raw))
    dumped = spec.model_dump(mode="json")
    again = JobSpec.model_validate(dumped)
    assert again == spec
    assert again.model_dump(mode="json") == dumped
