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


def ensure_private_dir(path: str | Path) -> Path:
    """Create the directory ``path`` (and missing parents) with mode 0700 if it is missing;
    an existing one is left as it is."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)                   # mkdir's mode is masked by the umask
    return path


def put_blob(data_dir: str | Path, sha256: str, data: bytes) -> tuple[str, bool]:
    """Store ``data`` under its hash, atomically; return ``(uri, created)``.

    ``created`` is False when an identical file was already there. Directories it creates
    are 0700 and the file is 0600: datasets are readable by the service's user alone.
    """
    path = blob_path(data_dir, sha256)
    if path.is_file():
        return path.as_uri(), False
    for directory in (Path(data_dir), path.parent.parent, path.parent):
        ensure_private_dir(directory)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
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
