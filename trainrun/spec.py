"""Job spec v1: the declarative description of one training run. Unknown fields are rejected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from models import ModelSpec
from trainrun.catalog import Params, tagged_union
from trainrun.datasets import DATASETS
from trainrun.objectives import LossSpec
from trainrun.optim import OptimizerSpec
from trainrun.schedules import SchedulerSpec


class Split(Params):
    train: float = Field(default=0.8, gt=0, lt=1)
    val: float = Field(default=0.2, gt=0, lt=1)
    test: float = Field(default=0.0, ge=0, lt=1)
    stratify: bool = True

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class DataCommon(Params):
    split: Split = Field(default_factory=Split)
    standardize: bool = Field(default=False, description="scale features by train-split statistics")


if TYPE_CHECKING:

    class DataSpec(DataCommon):
        source: str
        params: Params

else:
    DataSpec = tagged_union(DATASETS, "source", base=DataCommon, nest="params")


class Regularization(Params):
    """Explicit penalties added to the training objective and recorded as their own series."""

    l1: float = Field(default=0.0, ge=0)
    l2: float = Field(default=0.0, ge=0)


PHASES_MONITORED = ("train", "train_eval", "val")
METRICS = ("loss", "accuracy", "tie_rate", "penalty", "mse", "mae", "r2")
HIGHER_IS_BETTER = frozenset({"accuracy", "r2"})


class EarlyStopping(Params):
    monitor: str = Field(default="val.loss", description="`phase.metric`, e.g. val.accuracy")
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int = Field(default=10, ge=1, description="epochs without improvement to wait")
    min_delta: float = Field(default=0.0, ge=0, description="smallest change that counts")
    restore_best: bool = Field(default=True, description="test and export the best weights")

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, monitor: str) -> str:
        phase, _, metric = monitor.partition(".")
        if phase not in PHASES_MONITORED or metric not in METRICS:
            raise ValueError(
                f"monitor must be <phase>.<metric> with phase in {', '.join(PHASES_MONITORED)} "
                f"and metric in {', '.join(METRICS)}; got {monitor!r}"
            )
        return monitor

    @property
    def phase(self) -> str:
        return self.monitor.partition(".")[0]

    @property
    def metric(self) -> str:
        return self.monitor.partition(".")[2]

    @property
    def maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and self.metric in HIGHER_IS_BETTER)


class GradClip(Params):
    max_norm: float = Field(gt=0, description="clip the global gradient norm to this")


class Training(Params):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1)
    shuffle: bool = True
    early_stopping: EarlyStopping | None = None
    grad_clip: GradClip | None = None
    checkpoint_every: int = Field(
        default=1, ge=1, description="epochs between resumable checkpoints"
    )


class TrainEval(Params):
    every: int = Field(default=1, ge=1, description="re-evaluate the training set every k epochs")
    subset: int | None = Field(default=None, ge=1, description="a fixed seeded subset of m rows")


class Evaluation(Params):
    train_eval: TrainEval = Field(default_factory=TrainEval)
    eval_batch_size: int | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _positive(self) -> Evaluation:
        if isinstance(self.eval_batch_size, int) and self.eval_batch_size < 1:
            raise ValueError("eval_batch_size must be 'auto' or a positive integer")
        return self


class Resources(Params):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16: autocast on a GPU; a CPU worker trains in fp32"
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto", description="NHWC for 4-d conv inputs; auto: on a GPU with conv2d layers"
    )
    compile: Literal["auto", "on", "off"] = Field(
        default="auto", description="torch.compile; auto: on a GPU, for jobs long enough to repay"
    )
    cpu_threads: int | Literal["auto"] = Field(
        default="auto",
        description="torch threads on CPU; auto: training on 1 thread when a batch's forward "
        "pass is under 8 MFLOP, else on every core; eval passes on every core",
    )
    time_limit_seconds: float | None = Field(
        default=None, gt=0, description="wall time from first start, over all attempts"
    )

    @model_validator(mode="after")
    def _bf16_needs_a_gpu(self) -> Resources:
        if self.device == "cpu" and self.precision == "bf16":
            raise ValueError("precision bf16 needs a GPU; use fp32 with device cpu")
        return self


_ADAM: Any = {"kind": "adam"}  # the default optimizer, validated like a submitted one


class JobSpec(Params):
    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    data: DataSpec
    model: ModelSpec
    loss: LossSpec
    optimizer: OptimizerSpec = Field(default_factory=lambda: _ADAM)
    scheduler: SchedulerSpec | None = None
    regularization: Regularization = Field(default_factory=Regularization)
    training: Training = Field(default_factory=Training)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    resources: Resources = Field(default_factory=Resources)

    model_config = {**Params.model_config, "validate_default": True}
