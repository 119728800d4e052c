"""Sweep spec v1: a base job spec, its variations, repeats, ranking and stopping rules.

Overrides address into the job spec with dots and indexes: ``optimizer.lr``,
``model.layers[2].dropout`` (a layer is a single-key object, so this sets ``{dropout: v}``),
``model.layers[2].dropout.p`` (a shorthand scalar is widened to ``{p: v}`` first).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from models import LAYERS
from trainrun.catalog import Params
from trainrun.spec import HIGHER_IS_BETTER, METRICS

PathPart = str | int
RANK_PHASES = ("train", "train_eval", "val", "test")
MAX_RUNS = 200  # variants x seeds in one sweep

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


def parse_path(path: str) -> tuple[PathPart, ...]:
    """``model.layers[2].dropout`` -> ``("model", "layers", 2, "dropout")``."""
    parts: list[PathPart] = []
    for segment in path.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise ValueError(
                f"invalid path {path!r}: use names joined by dots, with [i] list indexes "
                "(e.g. model.layers[2].dropout)"
            )
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(parts)


def _valid_path(path: str) -> str:
    parse_path(path)
    return path


OverridePath = Annotated[str, AfterValidator(_valid_path)]


def dotted(parts: tuple[PathPart, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


class OverrideError(Exception):
    """An override that does not fit the base spec; ``loc`` is how far into it the path got."""

    def __init__(self, loc: tuple[PathPart, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _widen(node: dict[str, Any], key: str, at: tuple[PathPart, ...]) -> dict[str, Any]:
    """The object under ``node[key]``, widening a layer's shorthand scalar or a bare name."""
    child = node[key]
    if isinstance(child, dict):
        return child
    if child is None:
        node[key] = {}
        return node[key]
    shorthand = LAYERS[key].shorthand if key in LAYERS else None
    if shorthand is None:
        raise OverrideError(at, f"{dotted(at)} is {child!r}, not an object")
    node[key] = {shorthand: child}
    return node[key]


def _step(node: Any, key: PathPart, nxt: PathPart, at: tuple[PathPart, ...]) -> Any:
    """The container ``key`` leads to from ``node``, made ready to take ``nxt``."""
    here = (*at, key)
    if isinstance(key, int):
        if not isinstance(node, list):
            raise OverrideError(here, f"{dotted(at)} is not a list")
        if key >= len(node):
            raise OverrideError(here, f"index {key} out of range: {dotted(at)} has {len(node)}")
        child = node[key]
        if isinstance(child, str) and isinstance(nxt, str):
            if child != nxt:  # a bare layer name: "relu" is not a dropout layer
                raise OverrideError(here, f"{dotted(here)} is {child!r}, not {nxt!r}")
            node[key] = child = {child: None}
        if isinstance(child, dict) and len(child) == 1 and isinstance(nxt, str):
            name = next(iter(child))
            if name != nxt:
                raise OverrideError(
                    (*here, nxt), f"{dotted(here)} is a {name!r} entry, not {nxt!r}"
                )
        return child
    if not isinstance(node, dict):
        raise OverrideError(here, f"{dotted(at)} is not an object")
    if key not in node or node[key] is None:
        if isinstance(nxt, int):
            raise OverrideError(here, f"{dotted(here)} is not in the base spec")
        node[key] = {}
    if isinstance(nxt, str):
        return _widen(node, key, here)
    return node[key]


def apply_override(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value`` in ``spec`` (in place); raises ``OverrideError``."""
    parts = parse_path(path)
    node: Any = spec
    for i, key in enumerate(parts[:-1]):
        node = _step(node, key, parts[i + 1], parts[:i])
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise OverrideError(parts, f"{dotted(parts)} is not an existing list entry")
        node[last] = copy.deepcopy(value)
    elif isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    else:
        raise OverrideError(parts, f"{dotted(parts[:-1])} is not an object")


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with every override applied, in order."""
    spec = copy.deepcopy(base)
    for path, value in overrides.items():
        apply_override(spec, path, value)
    return spec


def _check_monitor(monitor: str) -> str:
    phase, _, metric = monitor.partition(".")
    if phase not in RANK_PHASES or metric not in METRICS:
        raise ValueError(
            f"metric must be <phase>.<metric> with phase in {', '.join(RANK_PHASES)} "
            f"and metric in {', '.join(METRICS)}; got {monitor!r}"
        )
    return monitor


class Monitored(Params):
    metric: str = "val.loss"
    mode: Literal["auto", "min", "max"] = "auto"

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        return _check_monitor(metric)

    @property
    def phase(self) -> str:
        return self.metric.partition(".")[0]

    @property
    def name(self) -> str:
        return self.metric.partition(".")[2]

    @property
    def maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and self.name in HIGHER_IS_BETTER)


class RankBy(Monitored):
    """How the leaderboard orders variants: each run's best epoch of this metric."""


class MedianStopping(Monitored):
    """Stop a running variant whose metric is worse than its peers' median at the same epoch."""

    min_epochs: int = Field(
        default=3, ge=1, description="warmup: judged only from this epoch on (a grace period)"
    )
    min_peers: int = Field(
        default=1, ge=1, description="other variants that must have reached the epoch"
    )


class Choice(Params):
    choice: list[Any] = Field(min_length=1)


class Uniform(Params):
    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform: [lo, hi] with lo <= hi")
        return self


class LogUniform(Params):
    loguniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        lo, hi = self.loguniform
        if not 0 < lo <= hi:
            raise ValueError("loguniform: [lo, hi] with 0 < lo <= hi")
        return self


class IntRange(Params):
    int_range: tuple[int, int] = Field(alias="int")

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.int_range[0] > self.int_range[1]:
            raise ValueError("int: [lo, hi] with lo <= hi (both included)")
        return self


Distribution = Choice | Uniform | LogUniform | IntRange


class RandomSearch(Params):
    samples: int = Field(ge=1, le=MAX_RUNS)
    seed: int = Field(default=0, ge=0)
    params: dict[OverridePath, Distribution] = Field(min_length=1)


class GridVariations(Params):
    grid: dict[OverridePath, Annotated[list[Any], Field(min_length=1)]] = Field(min_length=1)


class RandomVariations(Params):
    random: RandomSearch


class ListVariations(Params):
    variants: list[dict[OverridePath, Any]] = Field(alias="list", min_length=1)


Variations = GridVariations | RandomVariations | ListVariations


class Repeats(Params):
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


def _one_variant() -> Variations:
    return ListVariations.model_validate({"list": [{}]})


class SweepSpec(Params):
    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=180)
    base: dict[str, Any] = Field(description="a job spec; each variant overrides parts of it")
    variations: Variations = Field(default_factory=_one_variant)
    repeats: Repeats | None = Field(default=None, description="run every variant once per seed")
    rank_by: RankBy = Field(default_factory=RankBy)
    max_concurrent: int = Field(default=4, ge=1, le=100, description="runs queued at once")
    median_stopping: MedianStopping | None = None
