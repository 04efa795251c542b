"""Dataset uploads: validation before storage, content addressing, limits, pagination."""

from __future__ import annotations

import hashlib
import io
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from apitools import MAX_EXPANDED, MAX_UPLOAD, npz_bytes, upload, valid_arrays, valid_npz
from auditor.data import MIN_RATIO_ALLOWANCE, save_dataset
from tests.archives import deflated_zeros, npy_header


def _with(**changes) -> bytes:
    arrays = valid_arrays()
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    return npz_bytes(**arrays)


def _zip_of(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def _zip_members(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()



def _valid_members(**changes) -> dict[str, bytes]:
    members = {f"{name}.npy": _npy(value) for name, value in valid_arrays().items()}
    members.update(changes)
    return members


def _classes(**changes) -> bytes:
    rng = np.random.default_rng(1)
    arrays = {"x": rng.normal(size=(12, 6)), "y": np.arange(12) % 3, "x_val": rng.normal(size=(4, 6)),
              "y_val": np.arange(4) % 3}
    arrays.update(changes)
    return npz_bytes(**{name: value for name, value in arrays.items() if value is not None})


def _nan(shape) -> np.ndarray:
    a = np.zeros(shape)
    a.flat[0] = np.nan
    return a


BAD = {
    "not a zip": (b"hello, world", "not an .npz"),
    "empty file": (b"", "empty"),
    "truncated npz": (valid_npz()[:300], "not an .npz"),
    "plain .npy": (b"\x93NUMPY\x01\x00" + b"\x00" * 64, "not an .npz"),
    "zip of text": (_zip_of("notes.txt", b"hi"), "is not an .npy array"),
    "member without .npy": (_zip_members(_valid_members(**{"x": b"raw bytes"})), "is not an .npy array"),
    "member that is not .npy data": (_zip_members(_valid_members(**{"x.npy": b"PK not an array"})), "unreadable"),
    "member cut short": (_zip_members(_valid_members(**{"x.npy": _npy(np.ones((12, 6)))[:-40]})), "truncated"),
    "member with trailing data": (_zip_members(_valid_members(**{"y.npy": _npy(np.ones(12)) + b"\0" * 64})),
                                  "more data than its header"),
    "negative shape": (_zip_members(_valid_members(**{"y.npy": npy_header((-1,))})), "negative"),
    "one example": (npz_bytes(**valid_arrays(n=1)), "at least 3 training sequences"),
    "two examples": (npz_bytes(**valid_arrays(n=2)), "at least 3 training sequences"),
    "length 1": (_with(x=np.ones((12, 1))), "length at least 2"),
    "several channels without a reference set": (_with(x=np.ones((12, 6, 2)), x_val=None, y_val=None),
                                                 "needs a trusted reference set"),
    "two outputs without a reference set": (_with(y=np.ones((12, 2)), x_val=None, y_val=None),
                                            "needs a trusted reference set"),
    "classes without a reference set": (_classes(x_val=None, y_val=None), "trusted reference split"),
    "classes with a longer reference": (_classes(x_val=np.ones((4, 9))), "equal lengths"),
    "too many classes": (_classes(y=np.arange(12) * 500), "classes"),
    "pickled objects": (_with(x=np.array([{"a": 1}, None], dtype=object)), "pickled"),
    "NaN in x": (_with(x=_nan((12, 6))), "NaN"),
    "inf in y": (_with(y=np.full(12, np.inf)), "NaN or infinite"),
    "NaN in x_val": (_with(x_val=_nan((4, 12))), "x_val"),
    "missing y": (_with(y=None), "missing array(s): y"),
    "missing x": (_with(x=None), "missing array(s): x"),
    "mismatched rows": (_with(y=np.zeros(11)), "expected 12 rows"),
    "x_val without y_val": (_with(y_val=None), "together"),
    "unknown array": (_with(extra=np.zeros(3)), "unknown array"),
    "string labels": (_with(y=np.array(["a"] * 12)), "dtype"),
    "1-D x": (_with(x=np.zeros(12)), "2-D or 3-D"),
    "bad is_poison": (_with(is_poison=np.zeros(5, dtype=bool)), "is_poison"),
    "CSV with text in x": (b"x_0,x_1,y\n1,2,0.5\n1,abc,0.5\n1,2,0.5\n", "x_1 has a non-numeric value 'abc' in row 2"),
    "CSV with an unknown split": (b"x_0,x_1,y,split\n1,2,0.5,train\n1,2,0.5,val\n", "split has 'val' in row 2"),
    "CSV with a gap": (b"x_0,x_1,x_2,y\n1,,3,0.5\n1,2,3,0.5\n1,2,3,0.5\n", "empty cell at position 1"),
    "CSV without y": (b"x_0,x_1\n1,2\n", "no y column"),
    "CSV of classes without trusted rows": (b"x_0,x_1,y\n1,2,0\n1,2,1\n3,4,1\n", "trusted reference split"),
    "corrupt Parquet": (b"PAR1" + b"\0" * 64 + b"PAR1", "unreadable Parquet"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_4xx_with_reason_and_stores_nothing(backend, key, api, case):
    data, reason = BAD[case]
    before = backend.files()
    response = upload(api, data)
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"]
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0)
    assert backend.files() == before


def test_missing_file_field_is_422(api):
    response = api.post("/datasets", files={"other": ("a.npz", valid_npz())})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]
    assert api.post("/datasets", data={"file": "not a file"}).status_code == 422
    assert api.post("/datasets", json={"file": "x"}).status_code == 422


def test_upload_stores_metadata_and_a_content_addressed_file(backend, api):
    data = valid_npz(seed=5)
    response = upload(api, data, filename="../../etc/train.npz")
    assert response.status_code == 201, response.text
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert response.headers["location"] == f"/api/v1/datasets/{body['id']}"
    assert body["sha256"] == digest and body["size_bytes"] == len(data)
    assert (body["n"], body["length"], body["channels"], body["task"]) == (12, 6, 1, "regression")
    assert (body["n_val"], body["length_val"], body["has_ground_truth"]) == (4, 12, False)
    assert body["filename"] == "train.npz"
    stored = backend.data_dir / "blobs" / digest[:2] / f"{digest}.npz"
    assert stored.read_bytes() == data
    assert api.get(f"/datasets/{body['id']}").json() == body


def test_a_regression_set_of_several_channels_and_outputs_is_accepted(api):
    data = _with(x=np.ones((12, 6, 3)), y=np.ones((12, 2)), x_val=np.ones((4, 12, 3)), y_val=np.ones((4, 2)))
    response = upload(api, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["n"], body["length"], body["channels"], body["task"], body["length_val"]) == (
        12, 6, 3, "regression", 12)
    classes = _classes(x=np.ones((12, 6, 2)), x_val=np.ones((4, 6, 2)))             # the s4d classifier reads channels
    response = upload(api, classes)
    assert response.status_code == 201 and response.json()["channels"] == 2, response.text


def test_same_content_twice_gives_two_datasets_and_one_file(backend, api):
    data = valid_npz(seed=6)
    first, second = upload(api, data).json(), upload(api, data).json()
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]
    assert len([p for p in backend.files() if first["sha256"] in p.name]) == 1


def test_file_over_the_limit_is_413(backend, key, api):
    before = backend.files()
    response = upload(api, b"\0" * (MAX_UPLOAD + 1))
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    response = upload(api, b"\0" * (MAX_UPLOAD * 2))  # declared Content-Length over the limit
    assert response.status_code == 413
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0)
    assert backend.files() == before


def test_streamed_body_over_the_limit_is_413(backend, key, api):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.npz\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(6):
            yield b"\0" * (MAX_UPLOAD // 4)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api.post("/datasets", content=chunks(),
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0)


def test_compression_bomb_is_413(backend, api):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((1024, 1024)), y=np.zeros(1024))  # 8 MiB of zeros
    assert len(buffer.getvalue()) < MAX_UPLOAD < MAX_EXPANDED < 8 * 1024 * 1024
    before = backend.files()
    response = upload(api, buffer.getvalue())
    assert response.status_code == 413, response.text
    assert "decompressed" in response.json()["detail"]
    assert backend.files() == before


def test_unknown_dataset_is_404(api):
    for dataset in ("0" * 32, "nope", "%00"):
        response = api.get(f"/datasets/{dataset}")
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]


def test_dataset_pagination(api):
    ids = [upload(api, valid_npz(seed=s)).json()["id"] for s in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/datasets", params=params).json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert api.get("/datasets", params={"cursor": "garbage"}).status_code == 400
    assert api.get("/datasets", params={"limit": 0}).status_code == 422
    assert api.get("/datasets", params={"limit": 201}).status_code == 422



def test_a_header_that_declares_a_huge_shape_is_413_before_any_allocation(backend, key, api):
    data = _zip_members(_valid_members(**{"x.npy": npy_header((10**12, 6)) + b"\0" * 48}))
    before = backend.files()
    response = upload(api, data)
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "(1000000000000, 6)" in detail and "\n" not in detail
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0) and backend.files() == before


def test_a_compression_bomb_under_the_absolute_limit_is_refused_by_its_ratio_fast_and_in_bounded_memory(api):
    rows = 70_000
    data = deflated_zeros(rows)
    expanded = 8 * 7 * rows                              # 3.9 MB: under the server's absolute limit
    assert expanded < MAX_EXPANDED and len(data) * 100 < MIN_RATIO_ALLOWANCE < expanded
    tracemalloc.start()
    try:
        start = time.perf_counter()
        response = upload(api, data)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]          # the server runs in this process
    finally:
        tracemalloc.stop()
    assert response.status_code == 413, response.text
    assert "times the file's size" in response.json()["detail"]
    assert seconds < 5
    assert peak < expanded / 4, peak


def test_a_dataset_without_a_reference_set_is_accepted(api):
    arrays = valid_arrays(seed=3)
    del arrays["x_val"], arrays["y_val"]
    response = upload(api, npz_bytes(**arrays))
    assert response.status_code == 201, response.text
    assert response.json()["n_val"] is None


def test_uploaded_files_are_private(backend, api):
    body = upload(api, valid_npz(seed=8)).json()
    path = backend.data_dir / "blobs" / body["sha256"][:2] / f"{body['sha256']}.npz"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert (backend.data_dir / "blobs").stat().st_mode & 0o777 == 0o700


def _table(suffix: str, arrays: dict[str, np.ndarray], tmp_path) -> bytes:
    path = tmp_path / f"train.{suffix}"
    save_dataset(path, **arrays)
    return path.read_bytes()


def test_csv_and_parquet_uploads_are_the_same_dataset_as_the_npz(backend, api, tmp_path):
    arrays = valid_arrays(seed=9) | {"is_poison": np.arange(12) % 5 == 0}
    bodies = {}
    for suffix in ("npz", "csv", "parquet"):
        data = _table(suffix, arrays, tmp_path)
        response = upload(api, data, filename=f"train.{suffix}")
        assert response.status_code == 201, response.text
        bodies[suffix] = body = response.json()
        assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["filename"] == f"train.{suffix}"
        assert (backend.data_dir / "blobs" / body["sha256"][:2] / f"{body['sha256']}.npz").read_bytes() == data
    shape = ("n", "length", "channels", "task", "n_val", "length_val", "has_ground_truth")
    for suffix in ("csv", "parquet"):
        assert {f: bodies[suffix][f] for f in shape} == {f: bodies["npz"][f] for f in shape}
    assert (bodies["csv"]["n"], bodies["csv"]["length_val"], bodies["csv"]["has_ground_truth"]) == (12, 12, True)


def test_a_parquet_table_that_would_expand_over_the_limit_is_413_from_its_footer(backend, key, api, tmp_path):
    rows = MAX_EXPANDED // 8 // 3 + 1
    data = _table("parquet", {"x": np.zeros((rows, 2)), "y": np.zeros(rows)}, tmp_path)  # zeros: tiny on disk
    assert len(data) < MAX_UPLOAD
    before = backend.files()
    response = upload(api, data, filename="big.parquet")
    assert response.status_code == 413, response.text
    assert f"{rows} rows x 3 columns" in response.json()["detail"]
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0) and backend.files() == before
