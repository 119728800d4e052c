"""Dry-build a spec at submit: load the data, build the model on the meta device, check the loss.

Everything a job could fail on before its first batch fails here instead, as a ``SpecError``
with the path into the spec, so nothing invalid is ever queued.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import BuildContext, BuildError, build_model, count_parameters
from trainrun.datasets import SplitArrays, Table, load_table, split_table
from trainrun.datasets.base import standardize
from trainrun.datasets.files import DatasetParamError
from trainrun.errors import SpecError
from trainrun.objectives import LOSSES
from trainrun.settings import Limits
from trainrun.spec import JobSpec


@dataclass(frozen=True)
class Plan:
    parameter_count: int
    input_shape: tuple[int, ...]
    output_width: int
    task: str
    n_classes: int
    rows: dict[str, int]


def load_data(spec: JobSpec) -> Table:
    try:
        return load_table(spec.data.source, spec.data.params)
    except DatasetParamError as exc:
        raise SpecError(("data", "params", exc.param), exc.message) from None
    except (ValueError, OSError) as exc:
        raise SpecError(("data",), f"cannot load dataset: {exc}") from None


def prepare_data(spec: JobSpec, table: Table | None = None) -> SplitArrays:
    """The seeded train/val/test split the job trains on (standardised if the spec asks)."""
    table = table if table is not None else load_data(spec)
    s = spec.data.split
    try:
        split = split_table(table, s.train, s.val, s.test, spec.seed, s.stratify)
    except ValueError as exc:
        raise SpecError(("data", "split"), str(exc)) from None
    return standardize(split) if spec.data.standardize else split


def check_loss(spec: JobSpec, table: Table) -> tuple[int, ...]:
    """The output widths the loss accepts on this dataset; raises if the pairing makes no sense."""
    loss = LOSSES[spec.loss.kind].build
    if table.task not in loss.tasks:
        raise SpecError(
            ("loss", "kind"),
            f"loss '{spec.loss.kind}' does not fit a {table.task} dataset "
            f"('{spec.data.source}'); use one of: "
            + ", ".join(e.name for e in LOSSES if table.task in e.build.tasks),
        )
    return loss.output_dims(table)


def plan_job(spec: JobSpec, limits: Limits) -> Plan:
    table = load_data(spec)
    if len(table) > limits.max_dataset_rows:
        raise SpecError(
            ("data",),
            f"the dataset has {len(table):,} rows; the limit is {limits.max_dataset_rows:,}",
        )
    split = prepare_data(spec, table)
    widths = check_loss(spec, table)
    if spec.training.epochs > limits.max_epochs:
        raise SpecError(("training", "epochs"), f"at most {limits.max_epochs} epochs are allowed")
    if spec.training.batch_size > limits.max_batch_size:
        raise SpecError(("training", "batch_size"), f"at most {limits.max_batch_size}")
    try:
        with torch.device("meta"):
            built = build_model(spec.model, BuildContext(table.sample_shape, widths[0]))
    except BuildError as exc:
        raise SpecError(("model", *exc.loc), exc.message) from None
    if len(built.output_shape) != 1 or built.output_shape[0] not in widths:
        want = " or ".join(f"[{w}]" for w in widths)
        raise SpecError(
            ("model",),
            f"the model outputs {list(built.output_shape)} per sample, but loss "
            f"'{spec.loss.kind}' on '{spec.data.source}' needs {want}",
        )
    params = count_parameters(built.module)
    if params > limits.max_parameters:
        raise SpecError(
            ("model",), f"{params:,} parameters; the limit is {limits.max_parameters:,}"
        )
    rows = {"train": len(split.train), "val": len(split.val)}
    if split.test is not None:
        rows["test"] = len(split.test)
    return Plan(
        params, table.sample_shape, built.output_shape[0], table.task, table.n_classes, rows
    )
