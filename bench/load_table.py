"""Time the ``table`` source on a large Parquet file: first load (parse) vs cached load.

    .venv/bin/python bench/load_table.py [--rows 10000000] [--features 28]

Writes the file, the cache and a home into a temporary folder and removes them afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_parquet(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """Row groups of 1M rows, so generating the file never holds it whole in memory."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    schema = pa.schema([(n, pa.float32()) for n in names] + [("label", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            x = rng.standard_normal((n, features), dtype=np.float32)
            label = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
            columns = [pa.array(x[:, j]) for j in range(features)] + [pa.array(label)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


def timed(module: Any, names: list[str]) -> dict[str, float]:
    """Wrap ``module``'s functions so each call's wall time is recorded under its name."""
    seconds: dict[str, float] = {}
    for name in names:
        real = getattr(module, name)

        def wrapper(*args: Any, _real: Any = real, _name: str = name) -> Any:
            t0 = time.perf_counter()
            try:
                return _real(*args)
            finally:
                seconds[_name] = seconds.get(_name, 0.0) + time.perf_counter() - t0

        setattr(module, name, wrapper)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=28)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    need = args.rows * args.features * 4 * 3  # parquet file + cached x + slack
    tmp = Path(tempfile.mkdtemp(prefix="trainrun-bench-"))
    free = shutil.disk_usage(tmp).free
    if free < need:
        print(f"needs about {need / 1e9:.1f} GB free in {tmp}; {free / 1e9:.1f} GB free")
        return 1
    os.environ["TRAINRUN_HOME"] = str(tmp / "home")
    os.environ["TRAINRUN_DATA_DIR"] = str(tmp / "data")
    (tmp / "data").mkdir()

    from trainrun.datasets import files, load_table
    from trainrun.datasets.files import TableParams

    stages = timed(files, ["read_file", "make_table", "_write_cache"])

    try:
        path = tmp / "data" / "big.parquet"
        t0 = time.perf_counter()
        write_parquet(path, args.rows, args.features)
        print(
            f"wrote {path.stat().st_size / 1e9:.2f} GB parquet in {time.perf_counter() - t0:.1f}s"
        )
        params = TableParams(path="big.parquet", target="label")

        t0 = time.perf_counter()
        first = load_table("table", params)
        t_first = time.perf_counter() - t0
        print(
            f"first load (parse + checks + cache write): {t_first:.2f}s  x{first.x.shape} "
            f"{first.x.dtype}, y{first.y.shape} {first.y.dtype}, {first.task}"
        )
        print("  of which " + ", ".join(f"{name} {sec:.2f}s" for name, sec in stages.items()))
        del first

        t0 = time.perf_counter()
        cached = load_table("table", params)
        t_cached = time.perf_counter() - t0
        print(f"cached load (np.load, memory map): {t_cached * 1000:.1f}ms")
        t0 = time.perf_counter()
        total = float(np.asarray(cached.x[:, 0], dtype=np.float64).sum())
        print(f"reading one column through the map: {time.perf_counter() - t0:.2f}s ({total:.1f})")
        t0 = time.perf_counter()
        copy = np.array(cached.x)
        print(
            f"materialising x in memory from the cache: {time.perf_counter() - t0:.2f}s "
            f"({copy.nbytes / 1e9:.2f} GB)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
