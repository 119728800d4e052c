"""The ``table`` source: CSV, gzipped CSV, Parquet and NPZ files, checks, and the disk cache."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from trainrun.datasets import files, load_table
from trainrun.datasets.files import TableParams, describe_file
from trainrun.errors import SpecError
from trainrun.planning import load_data, plan_job
from trainrun.settings import Limits, get_settings
from trainrun.spec import JobSpec


@pytest.fixture(autouse=True)
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private home and data root, seen by the loader through ``get_settings()``."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("TRAINRUN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRAINRUN_DATA_DIR", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    text = ",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def labelled_rows(n: int = 60, seed: int = 0) -> list[list[Any]]:
    rng = np.random.default_rng(seed)
    labels = ["dog", "cat", "bird"]
    return [[*np.round(rng.normal(size=3), 4), labels[i % 3]] for i in range(n)]


def load(**params: Any) -> Any:
    return load_table("table", TableParams(**params))


def job(params: dict[str, Any], loss: str = "cross_entropy") -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "table",
            "data": {"source": "table", "params": params},
            "model": {"kind": "mlp", "hidden": [8]},
            "loss": {"kind": loss},
        }
    )


def spec_error(params: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_data(job(params))
    return info.value


# -- formats ---------------------------------------------------------------------------------


def test_csv_with_string_labels_maps_them_to_sorted_class_indices(data_root: Path) -> None:
    rows = labelled_rows()
    write_csv(data_root / "pets.csv", ["a", "b", "c", "kind"], rows)
    table = load(path="pets.csv", target="kind")
    assert table.task == "classification" and table.n_classes == 3
    assert table.x.dtype == np.float32 and table.x.shape == (60, 3)
    assert table.y.dtype == np.int64 and table.y.shape == (60,)
    # bird < cat < dog
    assert [int(v) for v in table.y[:3]] == [2, 1, 0]
    np.testing.assert_allclose(table.x[0], np.asarray(rows[0][:3], dtype=np.float32))


def test_gzipped_csv_regression(data_root: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [[*rng.normal(size=2).round(5), round(float(rng.normal()), 5)] for _ in range(50)]
    (data_root / "sub").mkdir()
    write_csv(data_root / "sub" / "r.csv.gz", ["u", "v", "price"], rows)
    table = load(path="sub/r.csv.gz", target="price")
    assert table.task == "regression"
    assert table.y.dtype == np.float32 and table.y.shape == (50, 1)
    np.testing.assert_allclose(table.y[:, 0], [r[2] for r in rows], rtol=1e-6)


def test_parquet_reads_only_the_needed_columns(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 100
    rng = np.random.default_rng(2)
    columns: dict[str, np.ndarray] = {f"f{i}": rng.normal(size=n) for i in range(5)}
    columns["unused"] = np.array(["text"] * n)
    columns["label"] = np.arange(n) % 4
    pq.write_table(pa.table(columns), data_root / "t.parquet")
    read_columns: list[Any] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, columns: Any = None, **kw: Any) -> Any:
        read_columns.append(columns)
        return real(self, *args, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    table = load(path="t.parquet", target="label", features=["f0", "f3"])
    assert read_columns == [["f0", "f3", "label"]]
    assert table.task == "classification" and table.n_classes == 4
    np.testing.assert_allclose(table.x[:, 1], columns["f3"].astype(np.float32))


def test_npz_keeps_the_sample_shape(data_root: Path) -> None:
    x = np.random.default_rng(3).normal(size=(40, 1, 8))
    np.savez(data_root / "arrays.npz", x=x, y=np.arange(40) % 2 + 5)
    table = load(path="arrays.npz")
    assert table.x.shape == (40, 1, 8) and table.x.dtype == np.float32
    assert table.task == "classification" and table.n_classes == 2
    assert table.y[:4].tolist() == [0, 1, 0, 1]  # labels 5, 6 -> class indices 0, 1


def test_npz_object_arrays_are_refused_not_unpickled(data_root: Path) -> None:
    np.savez(data_root / "evil.npz", x=np.zeros((4, 2)), y=np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(ValueError, match="object"):
        load(path="evil.npz")
    with pytest.raises(ValueError, match="Python objects"):
        describe_file(data_root / "evil.npz", "npz")


def test_integer_targets_with_many_values_are_regression_unless_told(data_root: Path) -> None:
    rows = [[i * 0.5, i * 7 % 1000] for i in range(400)]
    write_csv(data_root / "ints.csv", ["x", "n"], rows)
    assert load(path="ints.csv", target="n").task == "regression"
    forced = load(path="ints.csv", target="n", task="classification")
    assert forced.task == "classification" and forced.n_classes == len({r[1] for r in rows})


def test_a_dataset_id_names_an_uploaded_file(data_root: Path) -> None:
    (data_root / "uploads").mkdir()
    dataset_id = "ab" * 16
    write_csv(data_root / "uploads" / f"{dataset_id}.csv", ["a", "b", "c", "kind"], labelled_rows())
    assert load(dataset_id=dataset_id, target="kind").n_classes == 3
    err = spec_error({"dataset_id": "cd" * 16, "target": "kind"})
    assert err.loc == ("data", "params", "dataset_id")


def test_describe_file_counts_rows_in_every_format(data_root: Path) -> None:
    write_csv(data_root / "a.csv.gz", ["a", "k"], [[1, 2]] * 7)
    pq.write_table(pa.table({"a": [1.0] * 5}), data_root / "a.parquet")
    np.savez(data_root / "a.npz", x=np.zeros((3, 2)), y=np.zeros(3))
    assert describe_file(data_root / "a.csv.gz", "csv.gz") == files.FileInfo(7, ["a", "k"])
    assert describe_file(data_root / "a.parquet", "parquet") == files.FileInfo(5, ["a"])
    assert describe_file(data_root / "a.npz", "npz") == files.FileInfo(3, ["x", "y"])
    with pytest.raises(ValueError):
        describe_file(data_root / "a.csv.gz", "parquet")


# -- mistakes a user can fix -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/passwd", "a/../../b.csv"])
def test_paths_out_of_the_data_root_are_rejected_by_the_schema(path: str) -> None:
    with pytest.raises(ValidationError) as info:
        job({"path": path, "target": "y"})
    assert info.value.errors()[0]["loc"] == ("data", "params", "path")


def test_a_symlink_out_of_the_data_root_is_rejected(data_root: Path, tmp_path: Path) -> None:
    write_csv(tmp_path / "secret.csv", ["a", "y"], [[1, 0], [2, 1]])
    os.symlink(tmp_path / "secret.csv", data_root / "link.csv")
    err = spec_error({"path": "link.csv", "target": "y"})
    assert err.loc == ("data", "params", "path")
    assert "inside the data root" in err.message


def test_missing_target_column_names_it_and_lists_the_columns(data_root: Path) -> None:
    write_csv(data_root / "pets.csv", ["a", "b", "c", "kind"], labelled_rows())
    err = spec_error({"path": "pets.csv", "target": "species"})
    assert err.loc == ("data", "params", "target")
    assert "'species'" in err.message and "a, b, c, kind" in err.message
    err = spec_error({"path": "pets.csv", "target": "kind", "features": ["a", "zz"]})
    assert err.loc == ("data", "params", "features") and "'zz'" in err.message


def test_nan_in_a_feature_names_the_column(data_root: Path) -> None:
    rows = labelled_rows()
    rows[5][1] = "nan"
    write_csv(data_root / "holes.csv", ["a", "b", "c", "kind"], rows)
    err = spec_error({"path": "holes.csv", "target": "kind"})
    assert err.loc == ("data", "params", "features")
    assert "'b'" in err.message and "missing" in err.message


def test_nan_in_the_target_names_the_column(data_root: Path) -> None:
    pq.write_table(
        pa.table({"a": [1.0, 2.0, 3.0], "y": [0.5, float("nan"), 1.0]}), data_root / "t.parquet"
    )
    err = spec_error({"path": "t.parquet", "target": "y"})
    assert err.loc == ("data", "params", "target") and "'y'" in err.message


def test_text_in_a_feature_names_the_column(data_root: Path) -> None:
    write_csv(data_root / "t.csv", ["a", "colour", "y"], [[1, "red", 0], [2, "blue", 1]])
    err = spec_error({"path": "t.csv", "target": "y"})
    assert err.loc == ("data", "params", "features") and "'colour'" in err.message


def test_an_empty_table_is_refused(data_root: Path) -> None:
    write_csv(data_root / "empty.csv", ["a", "y"], [])
    err = spec_error({"path": "empty.csv", "target": "y"})
    assert "no rows" in err.message


def test_no_target_for_a_csv_is_a_spec_error(data_root: Path) -> None:
    write_csv(data_root / "t.csv", ["a", "y"], [[1, 0], [2, 1]])
    assert spec_error({"path": "t.csv"}).loc == ("data", "params", "target")


def test_a_table_job_plans_end_to_end(data_root: Path) -> None:
    write_csv(data_root / "pets.csv", ["a", "b", "c", "kind"], labelled_rows())
    plan = plan_job(job({"path": "pets.csv", "target": "kind"}), Limits())
    assert plan.input_shape == (3,) and plan.n_classes == 3 and plan.output_width == 3


# -- the disk cache --------------------------------------------------------------------------


def test_second_load_comes_from_the_cache_without_parsing(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_csv(data_root / "pets.csv", ["a", "b", "c", "kind"], labelled_rows())
    first = load(path="pets.csv", target="kind")
    entries = list(files.cache_dir(get_settings()).iterdir())
    assert len(entries) == 1 and (entries[0] / "x.npy").is_file()

    def no_parsing(*_: Any) -> Any:
        raise AssertionError("the file was parsed again")

    monkeypatch.setattr(files, "read_file", no_parsing)
    second = load(path="pets.csv", target="kind")
    assert isinstance(second.x, np.memmap)
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.y, first.y)
    assert (second.task, second.n_classes) == ("classification", 3)
    # Different params are a different entry: that one has to be parsed.
    with pytest.raises(AssertionError, match="parsed again"):
        load(path="pets.csv", target="kind", features=["a"])


def test_a_changed_file_is_parsed_again(data_root: Path) -> None:
    path = write_csv(data_root / "t.csv", ["a", "y"], [[1, 0], [2, 1], [3, 0], [4, 1]])
    assert len(load(path="t.csv", target="y", task="classification")) == 4
    write_csv(path, ["a", "y"], [[1, 0], [2, 1], [3, 0]])
    os.utime(path, ns=(1, 1))  # the size differs too; make the mtime differ surely
    assert len(load(path="t.csv", target="y", task="classification")) == 3


def test_one_hot_target_columns_are_classes_for_cross_entropy(data_root: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=40)
    rows = [[*rng.normal(size=2).round(4), *np.eye(3, dtype=int)[k]] for k in labels]
    write_csv(data_root / "onehot.csv", ["u", "v", "c0", "c1", "c2"], rows)
    params = {"path": "onehot.csv", "target": ["c0", "c1", "c2"], "task": "classification"}
    table = load(**params)
    assert table.task == "classification" and table.n_classes == 3
    assert table.y.tolist() == labels.tolist()
    assert plan_job(job(params), Limits()).output_width == 3

    rows[5][3] = 1  # two 1s in one row: not one-hot
    write_csv(data_root / "bad.csv", ["u", "v", "c0", "c1", "c2"], rows)
    error = spec_error({**params, "path": "bad.csv"})
    assert error.loc == ("data", "params", "target")
    assert "one-hot" in error.message
