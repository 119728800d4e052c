"""The engine against seed 000's plain loop on the same spec, seed and data, in one process.

    .venv/bin/python bench/engine_vs_baseline.py [--rounds 3] \\
        [--cases seed000,digits,table1m,threads]

Runs alternate (engine, baseline, engine, baseline ...) so that load from other processes hits
both equally; reports medians, ratios, the eval share of each loop and the load average.
Writes bench/out/engine_vs_baseline.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline_loop import train_baseline
from trainrun.datasets import SplitArrays
from trainrun.planning import prepare_data
from trainrun.spec import JobSpec
from worker.engine import Hooks, train

REPO = Path(__file__).resolve().parent.parent
Run = dict[str, float]


def seed000(epochs: int = 20) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "examples/000_dropout_sine.yaml").read_text())
    spec["training"]["epochs"] = epochs
    return spec


def digits(epochs: int = 20) -> dict[str, Any]:
    return {
        "name": "digits-mlp",
        "seed": 0,
        "data": {"source": "digits", "standardize": True},
        "model": {"kind": "mlp", "hidden": [32]},
        "loss": {"kind": "cross_entropy"},
        "training": {"epochs": epochs, "batch_size": 256},
    }


def table1m(epochs: int = 1) -> dict[str, Any]:
    return {
        "name": "table-1m",
        "seed": 0,
        "data": {
            "source": "higgs_synthetic",
            "params": {"rows": 1_000_000, "features": 28},
            "split": {"train": 0.8, "val": 0.2},
        },
        "model": {"kind": "mlp", "hidden": [128, 128]},
        "loss": {"kind": "cross_entropy"},
        "training": {"epochs": epochs, "batch_size": 256},
    }


def run_engine(spec: JobSpec, arrays: SplitArrays) -> Run:
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    t0 = time.perf_counter()
    train(spec, arrays, Hooks(lambda e, f: rows.setdefault(e, {}).update(f)))
    total = time.perf_counter() - t0
    last = rows[max(rows)]
    train_s = sum(f["train"]["seconds"] for f in rows.values())
    eval_s = sum(f["train_eval"]["seconds"] + f["val"]["seconds"] for f in rows.values())
    return {
        "total_s": total,
        "train_s": train_s,
        "eval_s": eval_s,
        "eval_share": eval_s / train_s,
        "train_samples_per_s": len(arrays.train) * len(rows) / train_s,
        "eval_samples_per_s": (len(arrays.train) + len(arrays.val)) * len(rows) / eval_s,
        "val_accuracy": last["val"]["correct"] / last["val"]["n"],
        "threads": torch.get_num_threads(),
    }


def run_baseline(spec: JobSpec, arrays: SplitArrays, threads: int) -> Run:
    t0 = time.perf_counter()
    result = train_baseline(spec, arrays, threads)
    total = time.perf_counter() - t0
    train_s = sum(h["train_seconds"] for h in result.history)
    eval_s = sum(h["eval_seconds"] for h in result.history)
    epochs = len(result.history)
    return {
        "total_s": total,
        "train_s": train_s,
        "eval_s": eval_s,
        "eval_share": eval_s / train_s,
        "train_samples_per_s": len(arrays.train) * epochs / train_s,
        "eval_samples_per_s": (len(arrays.train) + len(arrays.val)) * epochs / eval_s,
        "val_accuracy": result.final["val_acc"],
        "threads": threads,
    }


def alternate(contenders: dict[str, Callable[[], Run]], rounds: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            runs[name].append(fn())
            print(f"  round {r + 1} {name}: {runs[name][-1]['total_s']:.2f}s", flush=True)
    return runs


def medians(runs: list[Run]) -> Run:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(case: str, runs: dict[str, list[Run]], reference: str) -> dict[str, Any]:
    med = {name: medians(r) for name, r in runs.items()}
    ref = med[reference]
    print(f"\n{case}  (medians of {len(next(iter(runs.values())))} alternating rounds)")
    print(
        "| loop | threads | whole job s | train s | eval s | eval/train | train samples/s "
        f"| eval samples/s | final val acc | job time vs {reference} |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, m in med.items():
        print(
            f"| {name} | {m['threads']:.0f} | {m['total_s']:.2f} | {m['train_s']:.2f} "
            f"| {m['eval_s']:.2f} | {100 * m['eval_share']:.0f}% "
            f"| {m['train_samples_per_s']:,.0f} | {m['eval_samples_per_s']:,.0f} "
            f"| {m['val_accuracy']:.4f} | {m['total_s'] / ref['total_s']:.2f}x |"
        )
    return {"medians": med, "runs": runs, "reference": reference}


def with_threads(spec_dict: dict[str, Any], threads: int) -> JobSpec:
    s = copy.deepcopy(spec_dict)
    s.setdefault("resources", {})["cpu_threads"] = threads
    return JobSpec.model_validate(s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="seed000,digits,table1m,threads")
    parser.add_argument("--seed000-epochs", type=int, default=20)
    args = parser.parse_args()
    cases = args.cases.split(",")
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "machine": {"cpus": cores, "torch": torch.__version__, "load_before": os.getloadavg()},
        "cases": {},
    }
    plans: list[tuple[str, dict[str, Any], int]] = []
    if "seed000" in cases:
        plans.append(("seed000", seed000(args.seed000_epochs), args.rounds))
    if "digits" in cases:
        plans.append(("digits", digits(), args.rounds))
    if "table1m" in cases:
        plans.append(("table1m", table1m(), max(1, args.rounds - 1)))
    for case, spec_dict, rounds in plans:
        spec = JobSpec.model_validate(spec_dict)
        arrays = prepare_data(spec)
        print(f"{case}: {len(arrays.train)} train rows, {len(arrays.val)} val rows", flush=True)
        contenders: dict[str, Callable[[], Run]] = {"engine": partial(run_engine, spec, arrays)}
        if case != "table1m":  # minutes per run on a loaded 2-core machine: 1 thread only there
            contenders[f"baseline ({cores} threads, torch default)"] = partial(
                run_baseline, spec, arrays, cores
            )
        contenders["baseline (1 thread)"] = partial(run_baseline, spec, arrays, 1)
        runs = alternate(contenders, rounds)
        out["cases"][case] = report(case, runs, "engine")
    if "threads" in cases:
        for case, spec_dict in (("seed000", seed000(args.seed000_epochs)), ("digits", digits())):
            one, two = with_threads(spec_dict, 1), with_threads(spec_dict, 2)
            arrays = prepare_data(one)
            print(f"threads, {case}", flush=True)
            runs = alternate(
                {
                    "engine, 1 thread": partial(run_engine, one, arrays),
                    "engine, 2 threads": partial(run_engine, two, arrays),
                },
                args.rounds,
            )
            out["cases"][f"threads_{case}"] = report(
                f"CPU threads, {case}", runs, "engine, 1 thread"
            )
    out["machine"]["load_after"] = os.getloadavg()
    print(f"\nload average before {out['machine']['load_before']}, after {os.getloadavg()}")
    target = REPO / "bench/out/engine_vs_baseline.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
