"""The ``table`` source: a user's CSV, gzipped CSV, Parquet or NPZ file, cached on disk as .npy.

Files live under the data root (``path``) or were uploaded through the API (``dataset_id``).
The first load parses the file and writes ``x.npy``/``y.npy`` under ``<home>/cache/tables``,
keyed by the file's path, size and mtime and the params; later loads memory-map those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

from trainrun.catalog import Params
from trainrun.datasets.base import DATASETS, Table, Task
from trainrun.settings import Settings, get_settings

log = logging.getLogger(__name__)

FileFormat = Literal["csv", "csv.gz", "parquet", "npz"]
FORMATS: tuple[FileFormat, ...] = ("csv", "csv.gz", "parquet", "npz")
SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".csv.gz": "csv.gz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
}
UPLOADS = "uploads"  # under the data root: <id>.<format>
CACHE_VERSION = 1  # bump when the cached layout or the conversion rules change
MAX_INFERRED_CLASSES = 100
ROWS_PER_BLOCK = 1 << 16  # rows converted at a time: the block stays in cache
DATASET_ID = re.compile(r"^[0-9a-f]{32}$")


class DatasetParamError(ValueError):
    """A dataset that cannot be loaded because of one of its params; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class TableParams(Params):
    path: str | None = Field(default=None, description="file under the data root")
    dataset_id: str | None = Field(
        default=None, pattern=DATASET_ID.pattern, description="an uploaded dataset"
    )
    format: Literal["auto", "csv", "csv.gz", "parquet", "npz"] = Field(
        default="auto", description="auto: from the file name"
    )
    target: str | list[str] | None = Field(
        default=None,
        description="target column(s); for npz the target array (default y)",
    )
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="feature columns (default: all but the target); for npz arrays (default x)",
    )
    task: Task | None = Field(
        default=None,
        description="default: classification for text, or integers with few distinct values",
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = PurePosixPath(v.replace("\\", "/"))
        if not v.strip() or p.is_absolute() or re.match(r"^[A-Za-z]:", v):
            raise ValueError("path must be relative to the data root")
        if ".." in p.parts:
            raise ValueError("path must not leave the data root ('..')")
        return v

    @field_validator("target")
    @classmethod
    def _some_target(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and not v:
            raise ValueError("name at least one target column")
        return v

    @model_validator(mode="after")
    def _one_file(self) -> TableParams:
        if (self.path is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of 'path' and 'dataset_id'")
        return self


# -- where files are --------------------------------------------------------------------------


def detect_format(name: str) -> FileFormat | None:
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def sniff_format(head: bytes) -> FileFormat:
    """The format from a file's first bytes; anything without a known magic number is CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"\x1f\x8b"):
        return "csv.gz"
    return "csv"


def uploads_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / UPLOADS


def upload_path(settings: Settings, dataset_id: str, fmt: FileFormat) -> Path:
    if not DATASET_ID.match(dataset_id):
        raise ValueError(f"invalid dataset id {dataset_id!r}")
    return uploads_dir(settings) / f"{dataset_id}.{fmt}"


def resolve_file(p: TableParams, settings: Settings) -> tuple[Path, FileFormat]:
    """The file the params name, checked to lie inside the data root, and its format."""
    if p.dataset_id is not None:
        for fmt in FORMATS:
            path = upload_path(settings, p.dataset_id, fmt)
            if path.is_file():  # checked when it was uploaded: its format is its suffix
                return path, fmt
        raise DatasetParamError("dataset_id", f"no uploaded dataset {p.dataset_id}")
    assert p.path is not None
    root = settings.resolved_data_dir
    path = (root / p.path).resolve()  # follows symlinks: a link out of the root is refused too
    if not path.is_relative_to(root):
        raise DatasetParamError("path", "path must stay inside the data root")
    if not path.is_file():
        raise DatasetParamError("path", f"no file '{p.path}' under the data root")
    if p.format != "auto":
        return path, p.format
    detected = detect_format(path.name)
    if detected is None:
        raise DatasetParamError(
            "format",
            f"cannot tell the format of '{path.name}'; name the format "
            f"({', '.join(FORMATS)}) or use one of the extensions {', '.join(SUFFIXES)}",
        )
    return path, detected


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawTable:
    """Features already float32 (N, *shape); the target still as read (numbers or text)."""

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_names: list[str]


def _target_names(p: TableParams, default: str | None) -> list[str]:
    if p.target is None:
        if default is None:
            raise DatasetParamError("target", "name the target column ('target')")
        return [default]
    return [p.target] if isinstance(p.target, str) else list(p.target)


def _columns(p: TableParams, available: list[str]) -> tuple[list[str], list[str]]:
    """(feature columns, target columns), each checked to exist in the file."""
    targets = _target_names(p, None)
    for name in targets:
        if name not in available:
            raise DatasetParamError(
                "target", f"no column '{name}'; the file has: {_listing(available)}"
            )
    if p.features is None:
        features = [c for c in available if c not in targets]
    else:
        features = list(p.features)
        for name in features:
            if name not in available:
                raise DatasetParamError(
                    "features", f"no column '{name}'; the file has: {_listing(available)}"
                )
            if name in targets:
                raise DatasetParamError("features", f"'{name}' is the target; drop it here")
    if not features:
        raise DatasetParamError("features", "no feature columns left besides the target")
    return features, targets


def _listing(names: list[str], most: int = 20) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" (and {len(names) - most} more)" if len(names) > most else "")


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def _check_types(schema: pa.Schema, features: list[str], targets: list[str]) -> None:
    for name in features:
        t = schema.field(name).type
        if not _is_numeric(t):
            raise DatasetParamError("features", f"feature column '{name}' is not numeric ({t})")
    for name in targets:
        t = schema.field(name).type
        if len(targets) > 1 and not _is_numeric(t):
            raise DatasetParamError(
                "target", f"target column '{name}' is not numeric; several targets mean regression"
            )


def _refuse_nulls(batch: pa.RecordBatch, names: list[str], param: str, offset: int) -> None:
    for name in names:
        column = batch.column(name)
        if column.null_count:
            row = offset + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            kind = "feature" if param == "features" else "target"
            raise DatasetParamError(
                param, f"{kind} column '{name}' has a missing value at row {row}"
            )


def _from_batches(
    schema: pa.Schema,
    rows: int,
    batches: Iterable[pa.RecordBatch],
    features: list[str],
    targets: list[str],
    p: TableParams,
) -> RawTable:
    """Fill (N, F) float32 block by block, so a block is converted and checked while in cache
    and no second full-size copy of the table is ever held."""
    _check_types(schema, features, targets)
    if rows == 0:
        raise DatasetParamError("path" if p.path else "dataset_id", "the table has no rows")
    x = np.empty((rows, len(features)), dtype=np.float32)
    finite = np.ones(len(features), dtype=bool)
    target_chunks: list[list[pa.Array]] = [[] for _ in targets]
    offset = 0
    for batch in batches:
        _refuse_nulls(batch, features, "features", offset)
        _refuse_nulls(batch, targets, "target", offset)
        block = x[offset : offset + batch.num_rows]
        # One stack per block: ~6x faster than filling x column by column (strided writes).
        columns = [batch.column(name).to_numpy(zero_copy_only=False) for name in features]
        np.stack(columns, axis=1, out=block, casting="unsafe")
        finite &= np.isfinite(block).all(axis=0)
        for chunks, name in zip(target_chunks, targets, strict=True):
            chunks.append(batch.column(name))
        offset += batch.num_rows
    if offset != rows:
        raise ValueError(f"the file promised {rows} rows but held {offset}")
    bad = [name for name, ok in zip(features, finite, strict=True) if not ok]
    if bad:
        raise DatasetParamError(
            "features", f"feature column '{bad[0]}' holds NaN or infinite values"
        )
    ys = [
        pa.chunked_array(c, type=schema.field(n).type).to_numpy()
        for c, n in zip(target_chunks, targets, strict=True)
    ]
    y = ys[0] if len(ys) == 1 else np.stack(ys, axis=1).astype(np.float32)
    return RawTable(x, y, features, targets)


def _from_arrow(table: pa.Table, p: TableParams) -> RawTable:
    features, targets = _columns(p, table.column_names)
    batches = table.to_batches(max_chunksize=ROWS_PER_BLOCK)
    return _from_batches(table.schema, table.num_rows, batches, features, targets, p)


_CSV_COLUMN_ERROR = re.compile(r"In CSV column #(\d+): (.*)", re.S)


def read_csv(path: Path, fmt: FileFormat, p: TableParams) -> RawTable:
    """Columnar, multi-threaded parse; only the needed columns, features straight to float32."""
    compression = "gzip" if fmt == "csv.gz" else None
    with pa.input_stream(path, compression=compression) as stream:
        header = pa_csv.open_csv(stream).schema.names
    features, targets = _columns(p, header)
    convert = pa_csv.ConvertOptions(
        include_columns=features + targets,
        column_types={name: pa.float32() for name in features},
    )
    try:
        with pa.input_stream(path, compression=compression) as stream:
            table = pa_csv.read_csv(stream, convert_options=convert)
    except pa.ArrowInvalid as exc:
        m = _CSV_COLUMN_ERROR.match(str(exc))
        if m is None:
            raise ValueError(f"cannot parse the CSV file: {exc}") from None
        name = header[int(m.group(1))]
        where = "features" if name in features else "target"
        raise DatasetParamError(
            where, f"column '{name}' is not numeric: {m.group(2).strip()}"
        ) from None
    return _from_arrow(table, p)


def read_parquet(path: Path, p: TableParams) -> RawTable:
    """Streams only the feature and target columns, one batch at a time."""
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    features, targets = _columns(p, schema.names)
    batches = parquet.iter_batches(batch_size=ROWS_PER_BLOCK, columns=features + targets)
    return _from_batches(schema, parquet.metadata.num_rows, batches, features, targets, p)


def read_npz(path: Path, p: TableParams) -> RawTable:
    """Arrays by name (default ``x`` and ``y``); pickled object arrays are refused, never loaded."""
    targets = _target_names(p, "y")
    if len(targets) != 1:
        raise DatasetParamError("target", "an npz file has one target array")
    features = p.features or ["x"]
    try:
        with np.load(path, allow_pickle=False) as npz:
            available = list(npz.files)
            for name, param in [(n, "features") for n in features] + [(targets[0], "target")]:
                if name not in available:
                    raise DatasetParamError(
                        param, f"no array '{name}'; the file has: {_listing(available)}"
                    )
            arrays = [npz[name] for name in features]
            y = npz[targets[0]]
    except ValueError as exc:
        if isinstance(exc, DatasetParamError):
            raise
        raise ValueError(
            f"cannot read the npz file (object arrays are not accepted): {exc}"
        ) from None
    if y.ndim == 0:
        raise DatasetParamError("target", f"target array '{targets[0]}' needs one value per row")
    n = len(y)
    for name, a in zip(features, arrays, strict=True):
        if a.dtype.kind not in "biuf":
            raise DatasetParamError(
                "features", f"feature array '{name}' is not numeric ({a.dtype})"
            )
        if a.ndim == 0 or a.shape[0] != n:
            raise DatasetParamError(
                "features",
                f"feature array '{name}' has shape {a.shape}; target '{targets[0]}' has {n} rows",
            )
    if n == 0:
        raise DatasetParamError("path" if p.path else "dataset_id", "the table has no rows")
    if len(arrays) == 1:
        x = np.ascontiguousarray(arrays[0], dtype=np.float32)
        x = x.reshape(n, 1) if x.ndim == 1 else x
    else:
        x = np.concatenate([a.reshape(n, -1).astype(np.float32) for a in arrays], axis=1)
    finite = np.isfinite(x.reshape(n, -1)).all(axis=0)
    if not finite.all():
        raise DatasetParamError(
            "features", f"features '{', '.join(features)}' hold NaN or infinite values"
        )
    return RawTable(x, y, list(features), targets)


# -- targets and the task ---------------------------------------------------------------------


def _class_indices(y: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Labels -> indices into their sorted distinct values (identity for labels 0..K-1)."""
    if y.dtype.kind in "iu" and y.min() >= 0 and y.max() < 1_000_000:
        y = y.astype(np.int64, copy=False)
        present = np.bincount(y) > 0  # O(N), where np.unique sorts
        n_classes = int(present.sum())
        if n_classes == len(present):
            indices = y.astype(np.int64, copy=False)
        else:
            indices = (np.cumsum(present) - 1)[y]
    else:
        classes, indices = np.unique(y, return_inverse=True)
        n_classes = len(classes)
    if n_classes < 2:
        raise DatasetParamError("target", f"target '{name}' has a single class ({y[0]!r})")
    return np.asarray(indices, dtype=np.int64).reshape(-1), n_classes


def _few_distinct(y: np.ndarray) -> bool:
    limit = min(MAX_INFERRED_CLASSES, max(2, len(y) // 20))
    if y.min() >= 0 and y.max() < 1_000_000:  # bincount beats sorting 10M values
        return int(np.count_nonzero(np.bincount(y.astype(np.int64)))) <= limit
    return len(np.unique(y)) <= limit


def _one_hot_indices(y: np.ndarray, name: str) -> np.ndarray:
    """One-hot target columns (one 1 per row, the rest 0) -> class indices."""
    values = np.asarray(y, dtype=np.float64)
    if not (np.isin(values, (0.0, 1.0)).all() and (values.sum(axis=1) == 1).all()):
        raise DatasetParamError(
            "target",
            f"targets '{name}' as classes must be one-hot (exactly one 1 per row, else 0); "
            "give a single label column otherwise",
        )
    return np.ascontiguousarray(values.argmax(axis=1), dtype=np.int64)


def make_table(raw: RawTable, task: Task | None) -> Table:
    """Decide the task and shape the targets as ``Table`` expects."""
    y = raw.y
    name = ", ".join(raw.target_names)
    n = len(raw.x)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(n)
    text = y.dtype.kind in "OUS"
    if y.ndim == 2 and task == "classification" and not text:
        return Table(raw.x, _one_hot_indices(y, name), "classification", int(y.shape[1]))
    if y.ndim != 1 and (task == "classification" or text):
        raise DatasetParamError("target", "classification needs a single target column")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DatasetParamError("target", f"target '{name}' holds NaN or infinite values")
    if text and task == "regression":
        raise DatasetParamError("target", f"target '{name}' holds text; regression needs numbers")
    if task is None:
        if text or y.dtype.kind == "b":
            task = "classification"
        elif y.dtype.kind in "iu" and y.ndim == 1:
            task = "classification" if _few_distinct(y) else "regression"
        else:
            task = "regression"
    if task == "classification":
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            raise DatasetParamError(
                "target", f"target '{name}' has fractional values; classification needs labels"
            )
        labels, n_classes = _class_indices(y, name)
        return Table(raw.x, labels, "classification", n_classes)
    if y.dtype.kind not in "biuf":
        raise DatasetParamError("target", f"target '{name}' is not numeric ({y.dtype})")
    return Table(raw.x, np.ascontiguousarray(y, dtype=np.float32).reshape(n, -1), "regression")


# -- the on-disk cache ------------------------------------------------------------------------


def cache_key(path: Path, fmt: FileFormat, p: TableParams) -> str:
    st = path.stat()
    described = {
        "v": CACHE_VERSION,
        "path": str(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "format": fmt,
        "params": p.model_dump(mode="json", exclude={"path", "dataset_id", "format"}),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def cache_dir(settings: Settings) -> Path:
    return settings.home.resolve() / "cache" / "tables"


def _read_cached(folder: Path) -> Table | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        x = np.load(folder / "x.npy", mmap_mode="r")
        y = np.load(folder / "y.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    return Table(x, y, meta["task"], int(meta["n_classes"]))


def _write_cache(folder: Path, table: Table, raw: RawTable) -> None:
    """Write next to the final folder, then rename: readers never see half a cache entry."""
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        np.save(tmp / "x.npy", table.x)
        np.save(tmp / "y.npy", table.y)
        meta = {
            "task": table.task,
            "n_classes": table.n_classes,
            "features": raw.feature_names,
            "targets": raw.target_names,
            "rows": len(table),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, folder)
    except OSError as exc:  # a full disk or a concurrent writer: the load itself still succeeds
        log.warning("could not cache table at %s: %s", folder, exc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_file(path: Path, fmt: FileFormat, p: TableParams) -> RawTable:
    if fmt == "parquet":
        return read_parquet(path, p)
    if fmt == "npz":
        return read_npz(path, p)
    return read_csv(path, fmt, p)


@DATASETS.register("table", TableParams)
def table(p: TableParams) -> Table:
    """A CSV, gzipped CSV, Parquet or NPZ file under the data root, or an uploaded dataset."""
    settings = get_settings()
    path, fmt = resolve_file(p, settings)
    folder = cache_dir(settings) / cache_key(path, fmt, p)
    cached = _read_cached(folder)
    if cached is not None:
        return cached
    try:
        raw = read_file(path, fmt, p)
    except (pa.ArrowException, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"cannot read '{path.name}' as {fmt}: {exc}") from None
    result = make_table(raw, p.task)
    _write_cache(folder, result, raw)
    return result


# -- checking an upload -----------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    rows: int
    columns: list[str]


def describe_file(path: Path, fmt: FileFormat) -> FileInfo:
    """Open the file as ``fmt`` and count its rows; raises ``ValueError`` if it is not one."""
    try:
        if fmt == "parquet":
            meta = pq.ParquetFile(path).metadata
            return FileInfo(meta.num_rows, list(meta.schema.names))
        if fmt == "npz":
            return _describe_npz(path)
        compression = "gzip" if fmt == "csv.gz" else None
        with pa.input_stream(path, compression=compression) as stream:
            reader = pa_csv.open_csv(stream)
            rows = sum(batch.num_rows for batch in reader)  # streams: memory stays flat
            return FileInfo(rows, list(reader.schema.names))
    except (pa.ArrowException, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"not a readable {fmt} file: {exc}") from None


def _describe_npz(path: Path) -> FileInfo:
    """Array names and rows from the .npy headers alone; object (pickled) arrays are refused."""
    columns: list[str] = []
    rows = 0
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                raise ValueError(f"'{member}' in the npz file is not an array")
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(f)
            if dtype.hasobject:
                raise ValueError(
                    f"array '{member[:-4]}' holds Python objects; save numbers or text"
                )
            columns.append(member[:-4])
            if shape and (not rows or member[:-4] == "x"):
                rows = int(shape[0])
    if not columns:
        raise ValueError("the npz file holds no arrays")
    return FileInfo(rows, columns)
