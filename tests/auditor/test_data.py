import io
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from auditor.data import (DatasetError, DatasetTooLarge, check_auditable, load_dataset, parse_dataset,
                          save_dataset, validate_arrays)
from tests.archives import deflated_zeros, npy_header


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good(**over):
    arrays = {"x": np.zeros((4, 6)), "y": np.ones(4), "x_val": np.zeros((3, 12)), "y_val": np.ones(3)}
    arrays.update(over)
    return {k: v for k, v in arrays.items() if v is not None}


def test_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    digest = save_dataset(path, x=np.ones((5, 6)), y=np.arange(5.0), x_val=np.ones((2, 20)),
                          y_val=np.ones(2), is_poison=np.array([0, 1, 0, 0, 1], bool))
    ds = load_dataset(path)
    assert ds.sha256 == digest and ds.n == 5 and ds.length == 6 and ds.task == "regression"
    assert ds.summary()["length_val"] == 20 and ds.is_poison.tolist() == [False, True, False, False, True]
    assert "is_poison" not in ds.summary()


def test_class_labels_are_classification():
    ds = parse_dataset(_npz(x=np.zeros((3, 4, 2)), y=np.array([0, 1, 2])))
    assert ds.task == "classification" and ds.channels == 2 and not ds.has_reference


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not a zip at all", "not an .npz"),
    (_npz(x=np.array([{"a": 1}], dtype=object), y=np.ones(1)), "pickled"),
    (_npz(y=np.ones(3)), "missing array"),
    (_npz(**_good(x=np.full((4, 6), np.nan))), "NaN"),
    (_npz(**_good(y=np.array([1.0, np.inf, 0, 0]))), "NaN or infinite"),
    (_npz(**_good(y=np.ones(5))), "expected 4 rows"),
    (_npz(**_good(x=np.zeros((0, 6)), y=np.ones(0))), "empty"),
    (_npz(**_good(x=np.zeros(4))), "2-D or 3-D"),
    (_npz(**_good(y_val=None)), "together"),
    (_npz(**_good(is_poison=np.ones(3, bool))), "is_poison"),
    (_npz(**_good(extra=np.ones(2))), "unknown array"),
    (_npz(**_good(x=np.array([["a"] * 6] * 4))), "numeric"),
    (_npz(**_good(x=np.zeros((4, 6, 0)))), "empty dimension"),
    (_npz(**_good(y=np.zeros((4, 0)))), "empty dimension"),
    (_npz(x=np.zeros((2, 3)), y=np.array([1, 2**63 + 5], dtype=np.uint64)), "too large"),
])
def test_bad_files_get_one_clear_line(data, message):
    with pytest.raises(DatasetError, match=message) as info:
        parse_dataset(data)
    assert "\n" not in str(info.value)


def test_corrupt_member_is_a_clear_error():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="unreadable"):
        parse_dataset(buf.getvalue())


def test_decompression_bomb_is_refused():
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.zeros((2000, 1000)), y=np.zeros(2000))     # 16 MB of zeros, tiny on disk
    data = buf.getvalue()
    assert len(data) < 100_000
    with pytest.raises(DatasetError, match="decompressed"):
        parse_dataset(data, max_array_bytes=1_000_000)


def test_size_limit_and_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="over the limit"):
        load_dataset(_npz(**_good()), max_bytes=10)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.npz")




def test_a_declared_shape_over_the_limit_is_refused_from_thenpy_header():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", npy_header((10**12, 6)) + b"\0" * 48)
        archive.writestr("y.npy", npy_header((4,)) + b"\0" * 32)
    with pytest.raises(DatasetTooLarge, match=r"\(1000000000000, 6\)"):
        parse_dataset(buffer.getvalue())


def test_a_compression_bomb_is_refused_fast_and_in_bounded_memory():
    rows = 2_000_000
    data = deflated_zeros(rows)                       # about 100 KB that would expand to 112 MB
    expanded = 8 * 7 * rows
    assert len(data) * 100 < expanded < 512 << 20
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(DatasetTooLarge, match="times the file's size"):
            parse_dataset(data, max_array_bytes=512 << 20, max_expansion_ratio=100)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1 and peak < expanded / 50, (seconds, peak)


def test_the_ratio_allows_ordinary_compression_and_small_files():
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=rng.normal(size=(200, 8)), y=rng.normal(size=200))
    assert parse_dataset(buffer.getvalue(), max_expansion_ratio=2).n == 200
    small = deflated_zeros(1000)                       # 56 KB of zeros: under the 1 MiB floor
    assert parse_dataset(small, max_expansion_ratio=1).n == 1000


@pytest.mark.parametrize("name, content, message", [
    ("x", b"raw", "not an .npy array"),
    ("notes/", b"", "not an .npy array"),
    ("x.npy", npy_header((4, 6))[:20], "unreadable"),
    ("x.npy", npy_header((4, 6), descr="|O") + b"\0" * 8, "pickled"),
    ("x.npy", npy_header((4, 6)) + b"\0" * 10, "truncated"),
])
def test_members_that_are_not_npy_arrays_get_one_clear_line(name, content, message):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
        archive.writestr("y.npy", _npz_member(np.ones(4)))
    with pytest.raises(DatasetError, match=message) as info:
        parse_dataset(buffer.getvalue())
    assert "\n" not in str(info.value)


def _npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_repeated_member_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("x.npy", "y.npy", "y.npy"):
            archive.writestr(name, _npz_member(np.ones((4, 6)) if name == "x.npy" else np.ones(4)))
    with pytest.raises(DatasetError, match="more than once"):
        parse_dataset(buffer.getvalue())


def test_fortran_order_and_byte_order_are_read_right():
    x = np.asfortranarray(np.arange(24.0).reshape(4, 6)).astype(">f8")
    ds = parse_dataset(_npz(x=x, y=np.arange(4, dtype=">i4")))
    assert np.array_equal(ds.x, np.arange(24.0).reshape(4, 6)) and ds.y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.ones((2, 6)), "y": np.ones(2)}, "at least 3"),
    ({"x": np.ones((5, 1)), "y": np.ones(5)}, "length at least 2"),
    ({"x": np.ones((5, 6, 2)), "y": np.ones(5)}, "needs a trusted reference set"),
    ({"x": np.ones((5, 6)), "y": np.ones((5, 2))}, "needs a trusted reference set"),
    ({"x": np.ones((5, 6)), "y": np.arange(5)}, "trusted reference split"),
    ({"x": np.ones((5, 6)), "y": np.arange(5), "x_val": np.ones((2, 7)), "y_val": np.arange(2)}, "equal lengths"),
    ({"x": np.ones((5, 6)), "y": np.arange(5) * 1000, "x_val": np.ones((2, 6)), "y_val": np.arange(2)}, "classes"),
])
def test_sets_the_audit_cannot_run_on_are_refused(arrays, message):
    with pytest.raises(DatasetError, match=message):
        check_auditable(validate_arrays(arrays))


def test_auditable_sets_pass():
    check_auditable(validate_arrays({"x": np.ones((3, 2)), "y": np.ones(3)}))      # label-free: the rank
    check_auditable(validate_arrays({"x": np.ones((3, 2, 1)), "y": np.ones((3, 1))}))
    check_auditable(validate_arrays({"x": np.ones((3, 2, 3)), "y": np.ones((3, 2)), "x_val": np.ones((2, 5, 3)),
                                     "y_val": np.ones((2, 2))}))               # several channels and outputs
    check_auditable(validate_arrays({"x": np.ones((4, 6)), "y": np.array([0, 0, 1, 2]), "x_val": np.ones((2, 6)),
                                     "y_val": np.array([1, 2])}))


def test_narrow_dtypes_count_at_the_size_the_audit_converts_them_to():
    data = _npz(x=np.zeros((1000, 100), dtype=np.int8), y=np.zeros(1000))   # 100 KB stored, 800 KB as float64
    with pytest.raises(DatasetTooLarge):
        parse_dataset(data, max_array_bytes=500_000)
    assert parse_dataset(data, max_array_bytes=900_000).x.dtype == np.float64


def test_held_out_test_and_target_arrays_are_validated_like_the_reference():
    rng = np.random.default_rng(0)
    base = {"x": rng.standard_normal((5, 4)), "y": np.arange(5) % 2}
    d = validate_arrays({**base, "x_test": rng.standard_normal((3, 4)), "y_test": np.array([0, 1, 1]),
                         "x_target": rng.standard_normal((1, 4)), "y_target": np.array([1])})
    assert d.x_test.shape == (3, 4) and d.y_target.tolist() == [1] and d.x_val is None
    with pytest.raises(DatasetError, match="x_test and y_test must be given together"):
        validate_arrays({**base, "x_test": rng.standard_normal((3, 4))})
    with pytest.raises(DatasetError, match="y_target .* does not match y"):
        validate_arrays({**base, "x_target": rng.standard_normal((1, 4)), "y_target": np.array([0.5])})
    with pytest.raises(DatasetError, match="x_test must be 2-D"):
        validate_arrays({**base, "x_test": rng.standard_normal((3, 4, 2)), "y_test": np.array([0, 1, 1])})
