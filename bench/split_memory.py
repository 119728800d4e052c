"""Host copies of a large table on the way to the engine: peak memory of load, split,
standardise and the engine's device split (CPU), for a memory-mapped N x F float32 table.

    .venv/bin/python bench/split_memory.py [--rows 10000000] [--features 28]

The table is written as .npy files and memory-mapped, as the ``table`` source's cache does.
Each variant runs in a fresh process so VmHWM (peak RSS) is its own; RssAnon is the anonymous
part (copies), RssFile the mapped file pages (page cache, not a copy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def status() -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in MB."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def write_table(folder: Path, rows: int, features: int) -> None:
    x = np.lib.format.open_memmap(folder / "x.npy", "w+", np.float32, (rows, features))
    y = np.lib.format.open_memmap(folder / "y.npy", "w+", np.int64, (rows,))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        block = rng.standard_normal((n, features), dtype=np.float32)
        x[start : start + n] = block
        y[start : start + n] = block[:, 0] + block[:, 1] > 0
    x.flush()
    y.flush()
    del x, y


def old_standardize(split: object) -> object:
    """trainrun.datasets.base.standardize before this change: three temporaries per split."""
    from trainrun.datasets import SplitArrays, Table

    assert isinstance(split, SplitArrays)
    mean = split.train.x.mean(axis=0, keepdims=True)
    std = split.train.x.std(axis=0, keepdims=True)
    std[std == 0] = 1.0

    def apply(t: Table | None) -> Table | None:
        if t is None:
            return None
        return Table(((t.x - mean) / std).astype(np.float32), t.y, t.task, t.n_classes)

    train, val = apply(split.train), apply(split.val)
    assert train is not None and val is not None
    return SplitArrays(train, val, apply(split.test))


def child(folder: Path, variant: str) -> None:
    import torch

    from trainrun.datasets import Table, split_table
    from trainrun.datasets.base import standardize
    from worker.engine.data import DeviceSplit

    stages: dict[str, dict[str, float]] = {"start": status()}
    x = np.load(folder / "x.npy", mmap_mode="r")
    y = np.load(folder / "y.npy", mmap_mode="r")
    table = Table(x, y, "classification", 2)
    stages["loaded (memory map)"] = status()
    t0 = time.perf_counter()
    split = split_table(table, 0.8, 0.2, 0.0, 0, True)
    stages["split"] = status()
    if variant != "plain":
        split = old_standardize(split) if variant == "standardize-before" else standardize(split)  # type: ignore[assignment]
        stages["standardized"] = status()
    data = DeviceSplit.from_arrays(split, torch.device("cpu"))
    stages["engine device split (cpu)"] = status()
    seconds = time.perf_counter() - t0
    assert len(data.train) + len(data.val) == len(table)
    print(json.dumps({"variant": variant, "seconds": seconds, "stages": stages}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=28)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return 0
    folder = Path(tempfile.mkdtemp(prefix="trainrun-split-"))
    results = []
    try:
        write_table(folder, args.rows, args.features)
        table_mb = args.rows * (args.features * 4 + 8) / 2**20
        print(f"table: {args.rows} x {args.features} float32 + int64 labels = {table_mb:.0f} MB")
        for variant in ("plain", "standardize-before", "standardize"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(folder), variant],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            results.append(result)
            print(f"\n{variant} ({result['seconds']:.1f}s)")
            print("| stage | VmHWM MB | VmRSS MB | RssAnon MB | RssFile MB |")
            for stage, s in result["stages"].items():
                print(
                    f"| {stage} | {s['VmHWM']:.0f} | {s['VmRSS']:.0f} | {s['RssAnon']:.0f} "
                    f"| {s['RssFile']:.0f} |"
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    (REPO / "bench/out").mkdir(exist_ok=True)
    (REPO / "bench/out/split_memory.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
