"""The content-addressed directory of dataset files."""

from __future__ import annotations

import hashlib

import pytest

from store.blobs import blob_path, put_blob, read_blob, remove_blob, uri_to_path


def test_put_is_content_addressed_atomic_and_deduplicated(tmp_path):
    data = b"some dataset bytes"
    digest = hashlib.sha256(data).hexdigest()
    uri, created = put_blob(tmp_path / "data dir", digest, data)
    assert created and uri.startswith("file://")
    assert uri_to_path(uri) == blob_path(tmp_path / "data dir", digest)
    assert uri_to_path(uri).parent.name == digest[:2]
    assert read_blob(uri) == data
    assert put_blob(tmp_path / "data dir", digest, data) == (uri, False)
    assert [p.name for p in uri_to_path(uri).parent.iterdir()] == [f"{digest}.npz"]  # no temporary files left
    remove_blob(uri)
    remove_blob(uri)
    assert not uri_to_path(uri).exists()


def test_only_hex_digests_and_file_uris(tmp_path):
    for bad in ("../../etc/passwd", "AB" * 32, "ab" * 31):
        with pytest.raises(ValueError):
            blob_path(tmp_path, bad)
    with pytest.raises(ValueError):
        uri_to_path("s3://bucket/key.npz")
