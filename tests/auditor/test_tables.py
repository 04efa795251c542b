import io
import time

import numpy as np
import pandas as pd
import pytest

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.data import DatasetError, DatasetTooLarge, load_dataset, parse_dataset, save_dataset, sha256_bytes
from auditor.library import _dataset
from auditor.tables import dataset_frame, save_table

FIELDS = ("x", "y", "x_val", "y_val", "is_poison", "x_test", "y_test", "x_target", "y_target")


def _same(a, b) -> None:
    for name in FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None), name
        if left is not None:
            assert left.dtype == right.dtype and left.shape == right.shape, name
            assert np.array_equal(left, right), name                          # bit for bit, not approximately


def _sets() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    extreme = rng.standard_normal((5, 4)) * 10.0 ** rng.integers(-300, 300, (5, 4))
    return {
        # a poisoned regression benchmark: trusted sequences longer than the training ones
        "benchmark": make_benchmark(BenchmarkSpec(kind="decoys", n=40, length=6, seed=1)),
        # several channels, class labels, a reference set of the training length
        "channels": {"x": rng.normal(size=(7, 3, 2)), "y": np.arange(7) % 3, "x_val": rng.normal(size=(4, 3, 2)),
                     "y_val": np.array([0, 1, 2, 2])},
        # several regression outputs, integer x, no reference set, ground truth as 0/1
        "outputs": {"x": rng.integers(-5, 5, size=(6, 5)), "y": rng.normal(size=(6, 2)),
                    "is_poison": np.array([0, 1, 0, 0, 0, 1])},
        "extreme floats": {"x": extreme, "y": rng.normal(size=5)},
        # a targeted benchmark: held-out test rows and the attacked example for a forensics audit
        "held out": {"x": rng.normal(size=(6, 4)), "y": np.arange(6) % 2, "x_val": rng.normal(size=(3, 4)),
                     "y_val": np.array([0, 1, 1]), "x_test": rng.normal(size=(5, 4)), "y_test": np.arange(5) % 2,
                     "x_target": rng.normal(size=(1, 4)), "y_target": np.array([1]),
                     "is_poison": np.eye(6, dtype=bool)[2]},
    }


@pytest.mark.parametrize("name", list(_sets()))
def test_npz_csv_and_parquet_hold_the_same_arrays(tmp_path, name):
    arrays = _sets()[name]
    loaded = {}
    for suffix in ("npz", "csv", "parquet"):
        path = tmp_path / f"d.{suffix}"
        digest = save_dataset(path, **arrays)
        assert digest == sha256_bytes(path.read_bytes())
        loaded[suffix] = load_dataset(path)
        assert loaded[suffix].sha256 == digest
    _same(loaded["npz"], loaded["csv"])
    _same(loaded["npz"], loaded["parquet"])
    assert loaded["csv"].summary() | {"sha256": ""} == loaded["npz"].summary() | {"sha256": ""}


def test_the_written_table_is_the_documented_convention(tmp_path):
    path = tmp_path / "d.csv"
    save_table(path, x=[[1.5, 2.0], [3.0, 4.0]], y=[0, 1], x_val=[[5.0, 6.0, 7.0]], y_val=[1],
               is_poison=[False, True])
    assert path.read_text().splitlines() == [
        "x_0,x_1,x_2,y,split,is_poison",
        "1.5,2.0,,0,train,False",
        "3.0,4.0,,1,train,True",
        "5.0,6.0,7.0,1,trusted,False",
    ]
    many = dataset_frame(x=np.zeros((1, 2, 2)), y=np.zeros((1, 2)))
    assert list(many.columns) == ["x_0_c0", "x_0_c1", "x_1_c0", "x_1_c1", "y_0", "y_1"]
    with pytest.raises(ValueError, match="written as .csv or .parquet, not .txt"):
        save_table(tmp_path / "d.txt", x=np.zeros((3, 2)), y=np.zeros(3))


def test_hand_written_tables_are_read_leniently_where_it_is_safe():
    ds = parse_dataset(b"\xef\xbb\xbfx_1, x_0 ,y,split,is_poison\r\n2,1,0.5,train,1\r\n4,3,1.5, TRUSTED ,\r\n"
                       b"6,5,2,train,0\r\n")
    assert ds.x.tolist() == [[1, 2], [5, 6]] and ds.x_val.tolist() == [[3, 4]]
    assert ds.y.dtype == np.float64 and ds.is_poison.tolist() == [True, False]
    assert parse_dataset(b"x_0,x_1,y\n1,2,3\n4,5,6").task == "classification"     # integer y: class labels
    assert parse_dataset(b"x_0,x_1,y\n1,2,3.0\n4,5,6\n").task == "regression"


CSV_BAD = {
    "not a table": (b"hello, world", "not an .npz archive, a Parquet file or a CSV table"),
    "huge header field": (b'x_0,y,"' + b"a" * 200_000 + b'"\n1,2,3\n', "not an .npz"),
    "label too large": (b"x_0,y\n1,99999999999999999999999\n", "y must be numeric"),
    "binary": (b"\x00\x01\x02x_0", "not an .npz"),
    "header only": (b"x_0,x_1,y\n", "no rows"),
    "non-numeric cell": (b"x_0,x_1,y\n1,2,3\n1,abc,3\n", "x_1 has a non-numeric value 'abc' in row 2"),
    "non-numeric label": (b"x_0,y\n1,cat\n2,dog\n", "y has a non-numeric value 'cat' in row 1"),
    "NaN in the middle": (b"x_0,x_1,x_2,y\n1,NaN,3,0.5\n1,2,3,0.5\n", "empty cell at position 1"),
    "empty last cell in one row": (b"x_0,x_1,y\n1,2,3\n1,,3\n", "training rows have different lengths"),
    "empty column": (b"x_0,x_1,y\n1,,3\n1,,3\n", "column x_1 is empty in every row"),
    "infinite value": (b"x_0,x_1,y\n1,inf,3\n1,2,3\n", "x contains NaN or infinite values"),
    "missing label": (b"x_0,x_1,y\n1,2,3\n1,2,\n", "y contains NaN"),
    "short row": (b"x_0,x_1,y\n1,2,3\n1,2\n", "NaN"),
    "long row": (b"x_0,x_1,y\n1,2,3,4\n", "unreadable CSV"),
    "longer row later": (b"x_0,x_1,y\n1,2,3\n1,2,3,4\n", "unreadable CSV"),
    "unclosed quote": (b'x_0,y\n"1,2\n', "x_0 has a non-numeric value '1,2"),
    "missing position": (b"x_0,x_2,y\n1,2,3\n", "no column x_1"),
    "missing channel": (b"x_0_c0,x_0_c1,x_1_c0,y\n1,2,3,4\n", "no column x_1_c1"),
    "partly filled position": (b"x_0_c0,x_0_c1,y\n1,,4\n1,2,4\n", "some channels of position 0"),
    "mixed x forms": (b"x_0,x_0_c0,y\n1,2,3\n", "mixes x_<t> and x_<t>_c<c>"),
    "leading zero": (b"x_00,y\n1,2\n", "unknown column(s) 'x_00'"),
    "no x": (b"y,split\n1,train\n", "no x columns"),
    "no y": (b"x_0,x_1\n1,2\n", "no y column"),
    "y and y_0": (b"x_0,y,y_0\n1,2,3\n", "both y and y_<j>"),
    "missing output": (b"x_0,y_1\n1,2\n", "no column y_0"),
    "unknown column": (b"x_0,y,id\n1,2,3\n", "unknown column(s) 'id'"),
    "index written": (b",x_0,y\n0,1,2\n", "without its index"),
    "repeated column": (b"x_0,x_0,y\n1,2,3\n", "column x_0 more than once"),
    "unknown split": (b"x_0,y,split\n1,2,train\n1,2,val\n", "split has 'val' in row 2; allowed: train, trusted, test, "
                      "target"),
    "empty split": (b"x_0,y,split\n1,2,train\n1,2,\n", "split has an empty cell in row 2"),
    "only trusted rows": (b"x_0,y,split\n1,2,trusted\n", "no training rows"),
    "bad ground truth": (b"x_0,y,is_poison\n1,2,maybe\n", "is_poison has 'maybe' in row 1"),
    "missing ground truth": (b"x_0,y,is_poison\n1,2,\n1,2,1\n", "is_poison has an empty cell in row 1"),
    "poisoned trusted row": (b"x_0,y,split,is_poison\n1,2,train,0\n1,2,trusted,1\n", "trusted but marked"),
    "negative class": (b"x_0,y\n1,-1\n2,0\n", "negative class labels"),
}


@pytest.mark.parametrize("case", list(CSV_BAD))
def test_bad_csv_tables_get_one_clear_line(case):
    data, message = CSV_BAD[case]
    with pytest.raises(DatasetError) as info:
        parse_dataset(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


PARQUET_BAD = {
    "text in x": (pd.DataFrame({"x_0": ["1", "b"], "y": [1.0, 2.0]}), "x_0 has a non-numeric value 'b' in row 2"),
    "boolean x": (pd.DataFrame({"x_0": [True, False], "y": [1.0, 2.0]}), "x_0 must be numeric"),
    "null in x": (pd.DataFrame({"x_0": [1.0, None], "x_1": [1.0, 2.0], "y": [1.0, 2.0]}), "empty cell at position 0"),
    "unknown split": (pd.DataFrame({"x_0": [1.0], "y": [1.0], "split": ["val"]}), "split has 'val'"),
    "categorical split": (pd.DataFrame({"x_0": [1.0, 2.0], "y": [1.0, 2.0],
                                        "split": pd.Categorical(["train", "dev"])}), "split has 'dev' in row 2"),
    "unknown column": (pd.DataFrame({"x_0": [1.0], "y": [1.0], "weight": [1.0]}), "unknown column(s) 'weight'"),
}


@pytest.mark.parametrize("case", list(PARQUET_BAD))
def test_bad_parquet_tables_get_one_clear_line(case):
    frame, message = PARQUET_BAD[case]
    with pytest.raises(DatasetError) as info:
        parse_dataset(_parquet(frame))
    assert message in str(info.value) and str(info.value).startswith("the Parquet ")


def test_a_corrupt_parquet_file_gets_one_clear_line():
    data = _parquet(pd.DataFrame({"x_0": np.arange(50.0), "y": np.arange(50.0)}))
    for broken in (b"PAR1" + b"\0" * 64 + b"PAR1", data[:8] + b"\xff" * (len(data) - 16) + data[-8:]):
        with pytest.raises(DatasetError, match="unreadable Parquet") as info:
            parse_dataset(broken)
        assert "\n" not in str(info.value)


def test_a_csv_table_over_the_limit_is_refused_before_it_is_parsed():
    data = b"x_0,x_1,x_2,y\n" + b"0,0,0,0\n" * 200_000                 # 1.6 MB of text, 6.4 MB of cells
    start = time.perf_counter()
    with pytest.raises(DatasetTooLarge, match="200001 rows x 4 columns"):
        parse_dataset(data, max_array_bytes=4_000_000)
    assert time.perf_counter() - start < 0.5                           # counted, not parsed
    assert parse_dataset(data, max_array_bytes=8_000_000).n == 200_000
    with pytest.raises(DatasetTooLarge):
        parse_dataset(b"x_0,y\n" + b",\n" * 400_000, max_array_bytes=1 << 30, max_expansion_ratio=2)
    with pytest.raises(DatasetTooLarge, match="200001 rows"):                  # old Mac line ends count too
        parse_dataset(data.replace(b"\n", b"\r"), max_array_bytes=4_000_000)


def test_text_deep_in_a_csv_is_found_by_its_column_and_row():
    rows = 50_000
    data = b"x_0,x_1,y\n" + b"1,2,3\n" * rows + b"1,2e,3\n"
    with pytest.raises(DatasetError, match=f"x_1 has a non-numeric value '2e' in row {rows + 1}$"):
        parse_dataset(data)


def test_a_parquet_table_over_the_limit_is_refused_from_its_footer():
    frame = pd.DataFrame(np.zeros((200_000, 3)), columns=["x_0", "x_1", "y"])
    data = _parquet(frame)                                             # zeros: a few kB on disk, 4.8 MB of cells
    assert len(data) < 100_000
    with pytest.raises(DatasetTooLarge, match="200000 rows x 3 columns"):
        parse_dataset(data, max_array_bytes=1_000_000)
    with pytest.raises(DatasetTooLarge):
        parse_dataset(data, max_array_bytes=1 << 30, max_expansion_ratio=100)
    assert parse_dataset(data, max_array_bytes=8_000_000).n == 200_000


def test_the_library_takes_a_table_path_or_a_dataframe_in_the_column_convention(tmp_path):
    arrays = _sets()["benchmark"]
    frame = dataset_frame(**arrays)
    direct = _dataset(arrays["x"], arrays["y"], x_val=arrays["x_val"], y_val=arrays["y_val"],
                      is_poison=arrays["is_poison"])
    _same(_dataset(frame, None, x_val=None, y_val=None, is_poison=None), direct)
    for suffix in ("csv", "parquet"):
        save_dataset(tmp_path / f"d.{suffix}", **arrays)
        _same(_dataset(str(tmp_path / f"d.{suffix}"), None, x_val=None, y_val=None, is_poison=None), direct)
    with pytest.raises(TypeError, match="DataFrame"):
        _dataset(frame, None, x_val=arrays["x_val"], y_val=None, is_poison=None)
    with pytest.raises(DatasetError, match="the DataFrame table has no y column"):
        _dataset(frame.drop(columns="y"), None, x_val=None, y_val=None, is_poison=None)
