import json

import numpy as np
import pytest

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.cleaning import clean_arrays, clean_file
from auditor.data import DatasetError, load_dataset, save_dataset


@pytest.fixture
def dataset_file(tmp_path):
    arrays = make_benchmark(BenchmarkSpec(n=30, poison_fraction=0.1, length=6, seed=3))
    path = tmp_path / "data.npz"
    sha = save_dataset(path, **arrays)
    return path, sha, arrays


def _report(sha: str, flagged: list[int]) -> dict:
    return {"flagged": flagged, "reproduce": {"dataset_sha256": sha}}


def test_clean_arrays_drops_the_flagged_rows_and_keeps_the_reference():
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(10, 4, 2)), "y": rng.integers(0, 3, 10), "is_poison": np.arange(10) < 2,
              "x_val": rng.normal(size=(10, 8, 2)), "y_val": rng.integers(0, 3, 10)}   # n_val == n on purpose
    out = clean_arrays(arrays, [7, 0, 7])
    kept = [1, 2, 3, 4, 5, 6, 8, 9]
    for name in ("x", "y", "is_poison"):
        np.testing.assert_array_equal(out[name], arrays[name][kept])
    for name in ("x_val", "y_val"):
        assert out[name] is arrays[name] or np.array_equal(out[name], arrays[name])
        assert len(out[name]) == 10
    assert clean_arrays(arrays, [])["x"].shape == (10, 4, 2)
    for bad in ([10], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            clean_arrays(arrays, bad)
    with pytest.raises(ValueError, match="integers"):
        clean_arrays(arrays, [1.5])


def test_clean_file_writes_the_unflagged_rows(dataset_file, tmp_path):
    path, sha, arrays = dataset_file
    flagged = [int(i) for i in np.flatnonzero(arrays["is_poison"])] + [5]
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(sha, flagged)))
    out = tmp_path / "cleaned.npz"
    result = clean_file(path, report=report, out=out)
    cleaned = load_dataset(out)
    kept = np.setdiff1d(np.arange(30), flagged)
    assert result == {"kept": 30 - len(set(flagged)), "removed": len(set(flagged)), "sha256": cleaned.sha256}
    assert cleaned.n == 30 - len(set(flagged))
    np.testing.assert_array_equal(cleaned.x, arrays["x"][kept])
    np.testing.assert_array_equal(cleaned.y, arrays["y"][kept])
    np.testing.assert_array_equal(cleaned.is_poison, arrays["is_poison"][kept])
    assert not cleaned.is_poison.any()
    np.testing.assert_array_equal(cleaned.x_val, arrays["x_val"])
    np.testing.assert_array_equal(cleaned.y_val, arrays["y_val"])
    assert clean_file(path, report=_report(sha, flagged), out=tmp_path / "again.npz") == result   # a dict works too


def test_clean_file_refuses_another_files_report_and_bad_indices(dataset_file, tmp_path):
    path, sha, _ = dataset_file
    out = tmp_path / "cleaned.npz"
    with pytest.raises(DatasetError, match="another file") as info:
        clean_file(path, report=_report("0" * 64, [1]), out=out)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="out of range"):
        clean_file(path, report=_report(sha, [30]), out=out)
    with pytest.raises(DatasetError, match="not JSON"):
        (tmp_path / "bad.json").write_text("{")
        clean_file(path, report=tmp_path / "bad.json", out=out)
    with pytest.raises(DatasetError, match="flagged"):
        clean_file(path, report={"reproduce": {"dataset_sha256": sha}}, out=out)
    assert not out.exists()


def test_held_out_arrays_are_kept_whole_even_with_n_rows(tmp_path):
    rng = np.random.default_rng(0)
    n = 6
    arrays = {"x": rng.standard_normal((n, 4)), "y": np.arange(n) % 2, "x_val": rng.standard_normal((3, 4)),
              "y_val": np.array([0, 1, 0]), "is_poison": np.eye(n, dtype=bool)[0],
              "x_test": rng.standard_normal((n, 4)), "y_test": np.arange(n) % 2,
              "x_target": rng.standard_normal((1, 4)), "y_target": np.array([1])}
    data = tmp_path / "d.npz"
    save_dataset(data, **arrays)
    out = tmp_path / "c.npz"
    clean_file(data, report={"flagged": [0, 2]}, out=out)
    cleaned = load_dataset(out)
    assert cleaned.n == 4 and not cleaned.is_poison.any()
    for name in ("x_test", "y_test", "x_target", "y_target", "x_val"):
        assert np.array_equal(getattr(cleaned, name), arrays[name]), name


def test_a_table_is_cleaned_into_a_table_of_the_out_suffix(dataset_file, tmp_path):
    _, _, arrays = dataset_file
    table = tmp_path / "data.csv"
    sha = save_dataset(table, **arrays)
    flagged = [int(i) for i in np.flatnonzero(arrays["is_poison"])]
    for name, start in (("cleaned.parquet", b"PAR1"), ("cleaned.csv", b"x_0,")):
        out = tmp_path / name
        result = clean_file(table, report=_report(sha, flagged), out=out)
        cleaned = load_dataset(out)
        assert result["sha256"] == cleaned.sha256 and out.read_bytes().startswith(start)
        np.testing.assert_array_equal(cleaned.x, np.delete(arrays["x"], flagged, axis=0))
        np.testing.assert_array_equal(cleaned.x_val, arrays["x_val"])
    with pytest.raises(DatasetError, match="another file"):
        clean_file(table, report=_report("0" * 64, flagged), out=tmp_path / "never.csv")
