import io
import zipfile

import numpy as np
import pytest

from auditor.data import DatasetError, load_dataset, parse_dataset, save_dataset


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
