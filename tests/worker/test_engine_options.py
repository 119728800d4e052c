"""The engine's speed options, decided and (where the CPU can run them) exercised on the CPU.

CUDA cannot run here: where a choice depends on it, the device is passed as
``torch.device("cuda")`` to the pure decision function, or ``torch.cuda`` is patched, and the
comment says so. Nothing below allocates on a GPU.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from tests.support import digits_spec, sine_spec
from trainrun.datasets import SplitArrays, Table, split_table
from trainrun.datasets.base import standardize
from trainrun.optim import build_optimizer, fast_step
from trainrun.planning import prepare_data
from trainrun.spec import JobSpec
from worker.engine import Hooks, train
from worker.engine import tuning as tn
from worker.engine.data import DeviceSplit, StreamedTable, streamed_splits

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only handed to pure decision functions; never allocated on

Rows = dict[int, dict[str, dict[str, Any]]]


def run(spec_dict: dict[str, Any], **train_args: Any) -> tuple[Rows, Any]:
    spec = JobSpec.model_validate(spec_dict)
    rows: Rows = {}
    hooks = Hooks(lambda e, f: rows.setdefault(e, {}).update(f))
    result = train(spec, prepare_data(spec), hooks, **train_args)
    return rows, result


def _no_time(rows: Rows) -> Rows:
    return {
        e: {p: {k: v for k, v in r.items() if k != "seconds"} for p, r in f.items()}
        for e, f in rows.items()
    }


# -- precision --------------------------------------------------------------------------------


def test_bf16_with_device_cpu_is_rejected_when_the_spec_is_validated() -> None:
    with pytest.raises(ValidationError, match="bf16 needs a GPU"):
        JobSpec.model_validate(sine_spec(resources={"device": "cpu", "precision": "bf16"}))


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto would pick the GPU")
def test_bf16_on_a_cpu_worker_trains_in_fp32_with_a_note() -> None:
    plain, _ = run(sine_spec(epochs=2))
    bf16, result = run(sine_spec(epochs=2, resources={"device": "auto", "precision": "bf16"}))
    assert _no_time(bf16) == _no_time(plain)
    tuning = result.extra["tuning"]
    assert tuning["precision"] == "fp32"
    assert any("bf16" in note and "fp32" in note for note in tuning["notes"])


def test_bf16_autocast_is_chosen_on_a_gpu_that_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: torch.cuda.is_bf16_supported is patched, the device only named.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert tn.autocast_dtype("bf16", CUDA) == (torch.bfloat16, None)
    assert tn.autocast_dtype("fp32", CUDA) == (None, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    dtype, note = tn.autocast_dtype("bf16", CUDA)
    assert dtype is None and note is not None and "fp32" in note


def test_forward_context_is_a_no_op_without_autocast() -> None:
    out = nn.Linear(3, 2)(torch.ones(1, 3))
    with tn.Tuning(eval_batch=8).forward_context(CPU):
        assert (nn.Linear(3, 2)(torch.ones(1, 3))).dtype == out.dtype == torch.float32


# -- channels_last ----------------------------------------------------------------------------


def test_channels_last_only_for_4d_conv_inputs() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    mlp = nn.Sequential(nn.Linear(64, 10))
    assert tn.use_channels_last("auto", CUDA, (3, 8, 8), conv) == (True, None)
    assert tn.use_channels_last("auto", CPU, (3, 8, 8), conv) == (False, None)
    assert tn.use_channels_last("auto", CUDA, (3, 8, 8), mlp) == (False, None)
    assert tn.use_channels_last("auto", CUDA, (64,), mlp) == (False, None)
    assert tn.use_channels_last("off", CUDA, (3, 8, 8), conv) == (False, None)
    assert tn.use_channels_last("on", CPU, (3, 8, 8), conv) == (True, None)
    used, note = tn.use_channels_last("on", CUDA, (1, 150), conv)
    assert not used and note is not None and "4-d" in note


def test_channels_last_asked_for_on_3d_inputs_is_ignored_with_a_note() -> None:
    plain, _ = run(sine_spec(epochs=1))
    asked, result = run(sine_spec(epochs=1, resources={"channels_last": "on"}))
    assert _no_time(asked) == _no_time(plain)
    assert result.extra["tuning"]["channels_last"] is False
    assert result.extra["tuning"]["notes"]


# -- torch.compile ----------------------------------------------------------------------------


def test_compile_heuristic() -> None:
    long_job = tn.COMPILE_MIN_STEPS
    assert tn.should_compile("auto", CUDA, long_job)
    assert not tn.should_compile("auto", CUDA, long_job - 1)
    assert not tn.should_compile("auto", CPU, 10 * long_job)  # off on CPU by default
    assert tn.should_compile("on", CPU, 1)
    assert not tn.should_compile("off", CUDA, 10 * long_job)


def test_a_short_cpu_job_is_not_compiled() -> None:
    _, result = run(digits_spec(epochs=1, resources={"device": "cpu"}))
    assert result.extra["tuning"]["compiled"] is False


# -- eval batch size --------------------------------------------------------------------------


def test_eval_batch_size_on_cpu_and_as_asked() -> None:
    assert tn.eval_batch_size("auto", CPU, 256, 600, None) == tn.CPU_EVAL_BATCH
    assert tn.eval_batch_size("auto", CPU, 4096, 600, None) == 4096  # never below the train batch
    assert tn.eval_batch_size(77, CUDA, 256, 600, 10**10) == 77


def test_eval_batch_size_on_cuda_follows_free_memory() -> None:
    # Free memory is passed in (torch.cuda.mem_get_info cannot run here).
    row = 3 * 32 * 32 * 4
    small = tn.eval_batch_size("auto", CUDA, 128, row, 1 << 30)
    large = tn.eval_batch_size("auto", CUDA, 128, row, 16 << 30)
    assert 128 <= small < large <= tn.MAX_EVAL_BATCH
    assert small == int(tn.EVAL_MEMORY_FRACTION * (1 << 30)) // (row * tn.ACTIVATION_PER_INPUT_BYTE)
    assert tn.eval_batch_size("auto", CUDA, 128, row, 1 << 20) == 128  # floor: the train batch
    assert tn.eval_batch_size("auto", CUDA, 128, 4, 80 << 30) == tn.MAX_EVAL_BATCH


def test_cpu_eval_batch_is_used_by_the_engine() -> None:
    _, result = run(sine_spec(epochs=1, resources={"device": "cpu"}))
    assert result.extra["tuning"]["eval_batch"] == tn.CPU_EVAL_BATCH
    assert result.extra["tuning"]["rand_dropout_layers"] == 1  # RandDropout on the CPU


# -- fused / foreach optimizers ---------------------------------------------------------------


def test_fused_on_cuda_parameters_foreach_otherwise() -> None:
    # Stand-ins for CUDA parameters (no GPU here): fast_step reads only is_cuda and the dtype.
    cuda_param = SimpleNamespace(is_cuda=True, is_floating_point=lambda: True)
    cpu_param = SimpleNamespace(is_cuda=False, is_floating_point=lambda: True)
    assert fast_step(cast(Any, [cuda_param, cuda_param])) == {"fused": True}
    assert fast_step(cast(Any, [cuda_param, cpu_param])) == {"foreach": True}
    assert fast_step([]) == {"foreach": True}
    assert fast_step(list(nn.Linear(2, 2).parameters())) == {"foreach": True}


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_cpu_optimizers_use_foreach(kind: str) -> None:
    spec = JobSpec.model_validate(digits_spec(optimizer={"kind": kind}))
    opt = build_optimizer(spec.optimizer, nn.Linear(4, 2).parameters())
    assert opt.defaults["foreach"] is True
    assert not opt.defaults.get("fused")


# -- CPU threads ------------------------------------------------------------------------------


def test_training_threads_follow_the_work_per_step_not_the_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tn, "available_cpus", lambda: 2)
    norm = nn.BatchNorm1d(2)
    conv = nn.Sequential(  # seed 000's network, plus a norm: 1,270 parameters
        nn.Conv1d(1, 4, 10), nn.ReLU(), nn.Dropout(0.5), nn.Conv1d(4, 4, 10), nn.ReLU(),
        nn.Flatten(), nn.Linear(528, 2), norm,
    )  # fmt: skip
    mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    rng = torch.get_rng_state()
    assert norm.running_mean is not None
    running = norm.running_mean.clone()
    conv_flops = tn.forward_flops(conv, torch.ones(1, 1, 150), 256)
    mlp_flops = tn.forward_flops(mlp, torch.zeros(2, 64), 256)
    assert conv.training  # left as found, with no random draw and no BatchNorm update
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(norm.running_mean, running)
    # 2·MACs: conv 141·10·4 + 132·40·4 + 528·2 per row; mlp 64·32 + 32·10 per row.
    assert conv_flops == 2 * 256 * (141 * 10 * 4 + 132 * 40 * 4 + 528 * 2)
    assert mlp_flops == 2 * 256 * (64 * 32 + 32 * 10)
    assert tn.forward_flops(nn.Embedding(10, 4), torch.zeros(1, 3), 8) is None
    before = torch.get_num_threads()
    try:
        assert tn.configure_cpu_threads("auto", conv_flops) == 2 == torch.get_num_threads()
        assert tn.configure_cpu_threads("auto", mlp_flops) == 1 == torch.get_num_threads()
        assert tn.configure_cpu_threads("auto", None) == 1
        assert tn.configure_cpu_threads(2, mlp_flops) == 2
    finally:
        torch.set_num_threads(before)


def test_eval_passes_get_every_core_and_give_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tn, "available_cpus", lambda: 4)
    assert tn.eval_cpu_threads("auto", 1) == 4  # small model: 1 thread to train, 4 to evaluate
    assert tn.eval_cpu_threads(3, 3) == 3  # a number in the spec holds for both
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        tuning = tn.Tuning(eval_batch=1024, threads=1, eval_threads=2)
        with tuning.eval_threads_context():
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), tuning.eval_threads_context():
            raise RuntimeError("stopped mid-pass")
        assert torch.get_num_threads() == 1  # restored on the way out of a failed pass too
    finally:
        torch.set_num_threads(before)


# -- streamed data path -----------------------------------------------------------------------


def test_streamed_splits_rule() -> None:
    sizes = {"train": 800, "val": 100, "test": 100}
    assert streamed_splits(sizes, None) == set()  # CPU: host memory is the data's home
    assert streamed_splits(sizes, 4000) == set()
    assert streamed_splits(sizes, 1000) == {"train"}
    assert streamed_splits(sizes, 300) == {"train", "val", "test"}


def test_streamed_batches_match_resident_ones() -> None:
    spec = JobSpec.model_validate(digits_spec())
    split = prepare_data(spec)
    resident = DeviceSplit.from_arrays(split, CPU)
    streamed = DeviceSplit.from_arrays(split, CPU, stream_chunk_rows=100)
    assert isinstance(streamed.train, StreamedTable)
    order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(3))
    for o in (order, None):
        a = list(resident.train.batches(64, o))
        b = list(streamed.train.batches(64, o))
        assert len(a) == len(b)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(
    "make",
    [
        lambda: digits_spec(epochs=2),
        lambda: sine_spec(epochs=2, evaluation={"train_eval": {"subset": 300}}),
        lambda: digits_spec(
            epochs=2, data={"source": "digits", "split": {"val": 0.2, "train": 0.6, "test": 0.2}}
        ),
    ],
)
def test_streamed_training_gives_the_resident_figures(make: Any) -> None:
    resident, _ = run(make())
    streamed, _ = run(make(), stream_chunk_rows=50)  # a tiny chunk: many chunks per epoch
    assert _no_time(streamed) == _no_time(resident)


def test_streamed_table_take_keeps_it_on_the_host() -> None:
    table = Table(
        torch.arange(20, dtype=torch.float32).reshape(10, 2).numpy(),
        torch.arange(10).numpy(),
        "classification",
        10,
    )
    split = SplitArrays(table, table, None)
    streamed = DeviceSplit.from_arrays(split, CPU, stream_chunk_rows=3).train
    sub = streamed.take(torch.tensor([1, 5]))
    assert isinstance(sub, StreamedTable) and len(sub) == 2
    ((x, y),) = list(sub.batches(8, None))
    assert y.tolist() == [1, 5] and x[1].tolist() == [10.0, 11.0]


# -- host copies and worker warm-up -----------------------------------------------------------


def test_standardize_scales_split_copies_in_place_and_leaves_other_arrays_alone() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1000, 3)) * 5 + 100).astype(np.float32)
    x.setflags(write=False)  # like a memory-mapped cache
    table = Table(x, (x[:, 0] > 100).astype(np.int64), "classification", 2)
    split = split_table(table, 0.8, 0.2, 0.0, 0, True)
    train_buffer = split.train.x
    scaled = standardize(split)
    assert scaled.train.x is train_buffer  # the split's own copy, scaled in place
    assert np.allclose(scaled.train.x.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(scaled.train.x.std(axis=0), 1, atol=1e-4)
    again = standardize(SplitArrays(table, table, None))  # not owned: copied, source intact
    assert again.train.x is not x and float(x.mean()) > 50


def test_preload_engine_runs_on_meta_tensors_only() -> None:
    from trainrun.warmup import preload_engine

    assert preload_engine() >= 0
    assert not torch.cuda.is_initialized()


# -- dropout masks on the CPU -----------------------------------------------------------------


def test_rand_dropout_keeps_dropouts_distribution_and_scale() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3))
    assert tn.use_rand_dropout(model, CUDA) == 0  # no swap where the fused kernel runs
    assert tn.use_rand_dropout(model, CPU) == 1
    drop = model[1]
    assert isinstance(drop, tn.RandDropout) and isinstance(drop, nn.Dropout)
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = drop(x)
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01
    values = sorted(out.unique().tolist())
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)
    assert abs(float(out.mean()) - 1.0) < 0.01
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_subclasses_are_left_alone() -> None:
    class Custom(nn.Dropout):
        pass

    model = nn.Sequential(Custom(0.5))
    assert tn.use_rand_dropout(model, CPU) == 0
    assert type(model[0]) is Custom
