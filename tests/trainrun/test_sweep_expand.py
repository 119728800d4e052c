"""Sweep specs: override paths, grid / random / list expansion, repeats, per-variant errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.support import sine_spec
from trainrun.settings import Limits
from trainrun.sweeps.diagnosis import spearman, swept_parameters
from trainrun.sweeps.expand import SweepInvalid, expand_runs, expand_variations
from trainrun.sweeps.median import Contender, median_decisions
from trainrun.sweeps.prepare import prepare_runs
from trainrun.sweeps.spec import (
    MedianStopping,
    OverrideError,
    SweepSpec,
    apply_overrides,
    parse_path,
)


def sweep(variations: dict[str, Any], **extra: Any) -> SweepSpec:
    return SweepSpec.model_validate(
        {"name": "s", "base": sine_spec(), "variations": variations, **extra}
    )


def test_paths_parse_dots_and_indexes() -> None:
    assert parse_path("optimizer.lr") == ("optimizer", "lr")
    assert parse_path("model.layers[2].dropout.p") == ("model", "layers", 2, "dropout", "p")
    with pytest.raises(ValueError, match="invalid path"):
        parse_path("model..layers")
    with pytest.raises(ValidationError, match="invalid path"):
        sweep({"grid": {"model.layers[x]": [1]}})


def test_overrides_set_layers_scalars_and_missing_sections() -> None:
    base = sine_spec()
    out = apply_overrides(base, {"model.layers[2].dropout": 0.3, "regularization.l2": 1e-4})
    assert out["model"]["layers"][2] == {"dropout": 0.3}
    assert out["regularization"] == {"l2": 1e-4}
    assert base["model"]["layers"][2] == {"dropout": 0.5}  # the base is not touched
    widened = apply_overrides(base, {"model.layers[2].dropout.p": 0.1})
    assert widened["model"]["layers"][2] == {"dropout": {"p": 0.1}}
    bare = apply_overrides({"layers": ["dropout"]}, {"layers[0].dropout": 0.2})
    assert bare["layers"][0] == {"dropout": 0.2}
    with pytest.raises(OverrideError, match="out of range") as exc:
        apply_overrides(base, {"model.layers[9].dropout": 0.1})
    assert exc.value.loc == ("model", "layers", 9)
    with pytest.raises(OverrideError, match="'relu', not 'dropout'"):
        apply_overrides(base, {"model.layers[1].dropout": 0.1})
    with pytest.raises(OverrideError, match="'conv1d' entry, not 'dropout'"):
        apply_overrides(base, {"model.layers[0].dropout": 0.1})


def test_grid_is_the_cartesian_product_in_order() -> None:
    spec = sweep({"grid": {"optimizer.lr": [0.1, 0.01], "training.batch_size": [32, 64, 128]}})
    variants = expand_variations(spec.variations)
    assert len(variants) == 6
    assert variants[0] == {"optimizer.lr": 0.1, "training.batch_size": 32}
    assert variants[5] == {"optimizer.lr": 0.01, "training.batch_size": 128}


def test_random_search_is_reproducible_and_in_range() -> None:
    params = {
        "optimizer.lr": {"loguniform": [1e-4, 1e-1]},
        "model.layers[2].dropout": {"uniform": [0.0, 0.5]},
        "training.batch_size": {"int": [16, 64]},
        "optimizer.kind": {"choice": ["adam", "sgd"]},
    }
    a = expand_variations(sweep({"random": {"samples": 5, "seed": 7, "params": params}}).variations)
    b = expand_variations(sweep({"random": {"samples": 5, "seed": 7, "params": params}}).variations)
    c = expand_variations(sweep({"random": {"samples": 5, "seed": 8, "params": params}}).variations)
    assert a == b and a != c and len(a) == 5
    for v in a:
        assert 1e-4 <= v["optimizer.lr"] <= 1e-1
        assert 0.0 <= v["model.layers[2].dropout"] <= 0.5
        assert 16 <= v["training.batch_size"] <= 64 and isinstance(v["training.batch_size"], int)
        assert v["optimizer.kind"] in ("adam", "sgd")
    with pytest.raises(ValidationError, match="lo <= hi"):
        sweep({"random": {"samples": 1, "params": {"optimizer.lr": {"uniform": [1, 0]}}}})


def test_list_with_repeats_gives_one_run_per_seed() -> None:
    spec = sweep(
        {"list": [{}, {"model.layers[2].dropout": 0.0}]},
        repeats={"seeds": [3, 4]},
    )
    runs = expand_runs(spec)
    assert [(r.variant, r.repeat, r.seed) for r in runs] == [
        (0, 0, 3),
        (0, 1, 4),
        (1, 0, 3),
        (1, 1, 4),
    ]
    assert runs[3].spec["seed"] == 4 and runs[3].spec["model"]["layers"][2] == {"dropout": 0.0}
    assert runs[3].spec["name"] == "s v1 seed 4"


def test_no_variations_means_the_base_alone() -> None:
    runs = expand_runs(SweepSpec.model_validate({"name": "s", "base": sine_spec()}))
    assert len(runs) == 1 and runs[0].overrides == {}


def test_invalid_path_names_the_variant_index() -> None:
    spec = sweep({"list": [{}, {}, {"model.layers[7].dropout": 0.1}]})
    with pytest.raises(SweepInvalid) as exc:
        expand_runs(spec)
    (error,) = exc.value.errors
    assert error["loc"] == ["body", "variants", 2, "model", "layers", 7]
    assert "variant 2" in error["msg"] and "model.layers[7].dropout=0.1" in error["msg"]


def test_invalid_values_are_rejected_per_variant_with_the_field() -> None:
    spec = sweep(
        {"grid": {"model.layers[2].dropout.p": [0.1, 0.2, 0.3, 1.5]}},
        max_concurrent=2,
    )
    with pytest.raises(SweepInvalid) as exc:
        prepare_runs(spec, Limits())
    (error,) = exc.value.errors
    assert error["loc"] == ["body", "variants", 3, "model", "layers", 2, "dropout", "p"]
    assert "model.layers[2].dropout.p=1.5" in error["msg"]


def test_a_spec_that_does_not_build_is_named_by_variant() -> None:
    spec = sweep({"list": [{}, {"model.layers[0].conv1d.kernel_size": 500}]})
    with pytest.raises(SweepInvalid) as exc:
        prepare_runs(spec, Limits())
    assert [e["loc"][:3] for e in exc.value.errors] == [["body", "variants", 1]]


def test_too_many_runs_are_refused() -> None:
    spec = sweep({"grid": {"optimizer.lr": list(range(1, 30))}}, repeats={"seeds": list(range(9))})
    with pytest.raises(SweepInvalid, match="at most"):
        expand_runs(spec)


def test_median_rule_stops_the_worse_running_variant() -> None:
    rule = MedianStopping(metric="val.loss", min_epochs=2)
    good = Contender(1, 0, False, {1: 0.5, 2: 0.3, 3: 0.2})
    fine = Contender(2, 1, True, {1: 0.6, 2: 0.31})
    bad = Contender(3, 2, True, {1: 0.7, 2: 0.69, 3: 0.68})
    decisions = median_decisions([good, fine, bad], rule)
    assert [(d.key, d.epoch) for d in decisions] == [(3, 3)]
    assert "epoch 3: val.loss 0.68 worse than median 0.2" in decisions[0].reason("val.loss")
    # Before min_epochs nothing is judged; a higher-is-better metric flips the comparison.
    assert median_decisions([good, Contender(4, 3, True, {1: 9.0})], rule) == []
    acc = MedianStopping(metric="val.accuracy", min_epochs=1)
    stop = median_decisions(
        [Contender(1, 0, True, {1: 0.4}), Contender(2, 1, False, {1: 0.9})], acc
    )
    assert [d.key for d in stop] == [1]


def test_spearman_and_swept_parameters() -> None:
    assert spearman([0.0, 0.3, 0.6], [0.001, 0.01, 0.02]) == pytest.approx(1.0)
    assert spearman([0.0, 0.3, 0.6], [0.03, 0.01, 0.02]) == pytest.approx(-0.5)
    assert spearman([1, 1], [1, 2]) is None
    overrides = [{"a": 1, "b": 2}, {"a": 2, "b": 2}]
    assert swept_parameters(overrides) == ["a"]
