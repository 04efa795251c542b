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


def test_blobs_and_their_directories_are_private(tmp_path):
    data = b"private bytes"
    digest = hashlib.sha256(data).hexdigest()
    path = uri_to_path(put_blob(tmp_path / "data", digest, data)[0])
    assert path.stat().st_mode & 0o777 == 0o600
    for directory in (tmp_path / "data", path.parent.parent, path.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_a_new_sqlite_database_is_private(tmp_path):
    from sqlalchemy import text

    from store.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/data/auditor.db")
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.commit()
        files = list((tmp_path / "data").iterdir())
        assert {f.name for f in files} >= {"auditor.db", "auditor.db-wal"}
        assert all(f.stat().st_mode & 0o777 == 0o600 for f in files), files
    engine.dispose()
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
