"""Dataset files in a content-addressed directory: ``DATA_DIR/blobs/ab/abcdef....npz``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse


def blob_path(data_dir: str | Path, sha256: str) -> Path:
    """Where the file with content hash ``sha256`` lives under ``data_dir``."""
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return Path(data_dir).resolve() / "blobs" / sha256[:2] / f"{sha256}.npz"


def put_blob(data_dir: str | Path, sha256: str, data: bytes) -> tuple[str, bool]:
    """Store ``data`` under its hash, atomically; return ``(uri, created)``.

    ``created`` is False when an identical file was already there.
    """
    path = blob_path(data_dir, sha256)
    if path.is_file():
        return path.as_uri(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.as_uri(), True


def uri_to_path(uri: str) -> Path:
    """The local path of a ``file://`` URI as stored in ``Dataset.uri``."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"unsupported dataset location: {uri}")
    return Path(unquote(parsed.path))


def read_blob(uri: str) -> bytes:
    """The bytes of a stored dataset file."""
    return uri_to_path(uri).read_bytes()


def remove_blob(uri: str) -> None:
    """Delete a stored file if it exists."""
    uri_to_path(uri).unlink(missing_ok=True)
