"""Expand a sweep's variations (grid, seeded random, list) and repeats into runs."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from trainrun.sweeps.spec import (
    MAX_RUNS,
    Choice,
    Distribution,
    GridVariations,
    IntRange,
    LogUniform,
    OverrideError,
    RandomVariations,
    SweepSpec,
    Uniform,
    Variations,
    apply_overrides,
)


class SweepInvalid(Exception):
    """Variants that cannot run; ``errors`` are FastAPI-style entries (``loc`` into the body)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Run:
    """One run of a sweep: a variant (its overrides) with one seed."""

    variant: int
    repeat: int
    seed: int | None
    overrides: dict[str, Any]
    spec: dict[str, Any]  # the base with the overrides applied; not validated yet


def _round(x: float) -> float:
    return float(f"{x:.6g}")  # readable overrides; the sample stays reproducible


def _sample(dist: Distribution, rng: random.Random) -> Any:
    if isinstance(dist, Choice):
        return rng.choice(dist.choice)
    if isinstance(dist, Uniform):
        return _round(rng.uniform(*dist.uniform))
    if isinstance(dist, LogUniform):
        lo, hi = dist.loguniform
        return _round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    assert isinstance(dist, IntRange)
    return rng.randint(*dist.int_range)


def expand_variations(variations: Variations) -> list[dict[str, Any]]:
    """Each variant's overrides (path -> value), in a stable order."""
    if isinstance(variations, GridVariations):
        paths = list(variations.grid)
        return [
            dict(zip(paths, values, strict=True))
            for values in itertools.product(*variations.grid.values())
        ]
    if isinstance(variations, RandomVariations):
        search = variations.random
        rng = random.Random(search.seed)
        return [
            {path: _sample(dist, rng) for path, dist in search.params.items()}
            for _ in range(search.samples)
        ]
    return [dict(v) for v in variations.variants]


def expand_runs(sweep: SweepSpec) -> list[Run]:
    """Every run (variant x seed), its spec built; raises ``SweepInvalid`` naming the variant."""
    variants = expand_variations(sweep.variations)
    seeds: list[int | None] = list(sweep.repeats.seeds) if sweep.repeats else [None]
    if len(variants) * len(seeds) > MAX_RUNS:
        raise SweepInvalid(
            [
                {
                    "type": "sweep_too_large",
                    "loc": ["body", "variations"],
                    "msg": f"{len(variants)} variants x {len(seeds)} seeds = "
                    f"{len(variants) * len(seeds)} runs; at most {MAX_RUNS} are allowed",
                }
            ]
        )
    runs: list[Run] = []
    errors: list[dict[str, Any]] = []
    for index, overrides in enumerate(variants):
        try:
            spec = apply_overrides(sweep.base, overrides)
        except OverrideError as exc:
            errors.append(variant_error(index, exc.loc, exc.message, overrides, "override_invalid"))
            continue
        for repeat, seed in enumerate(seeds):
            run_spec = dict(spec)
            run_spec["name"] = f"{sweep.name} v{index}" + (
                f" seed {seed}" if seed is not None else ""
            )
            if seed is not None:
                run_spec["seed"] = seed
            runs.append(Run(index, repeat, seed, overrides, run_spec))
    if errors:
        raise SweepInvalid(errors)
    return runs


def variant_error(
    index: int, loc: tuple[Any, ...], message: str, overrides: dict[str, Any], kind: str
) -> dict[str, Any]:
    """A 422 entry for one variant: where in its spec, what, and the variant's overrides."""
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "none"
    return {
        "type": kind,
        "loc": ["body", "variants", index, *loc],
        "msg": f"variant {index} (overrides: {shown}): {message}",
    }
