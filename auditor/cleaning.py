"""The cleaned data set: the audited file without the examples an audit flagged.

:func:`clean_arrays` drops the flagged rows from the training arrays (``x``, ``y`` and every
other per-training-example array, such as ``is_poison``) and keeps the trusted reference
set (``x_val``, ``y_val``) as it is. :func:`clean_file` does it for a dataset file and a
report, after checking that the report is the audit of that very file.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from auditor.data import DatasetError, load_dataset, save_dataset

# the trusted reference set and a benchmark's held-out arrays: never training examples
REFERENCE = ("x_val", "y_val", "x_test", "y_test", "x_target", "y_target")


def clean_arrays(arrays: Mapping[str, np.ndarray], flagged: Iterable[int]) -> dict[str, np.ndarray]:
    """``arrays`` without the ``flagged`` training examples.

    Parameters
    ----------
    arrays : mapping of name to array
        A data set's arrays; ``x`` holds the n training sequences. Every other array with n
        rows, except the reference set (``x_val``, ``y_val``) and the held-out arrays
        (``x_test``, ``y_test``, ``x_target``, ``y_target``), is per training example.
    flagged : iterable of int
        Indices into the training examples, 0 <= i < n (repeats are harmless).

    Returns
    -------
    dict, the same names; per-example arrays keep the unflagged rows in their order.

    Raises
    ------
    ValueError
        A flagged index out of range, or not an integer.
    """
    n = int(np.asarray(arrays["x"]).shape[0])
    drop = _indices(flagged, n)
    keep = np.ones(n, bool)
    keep[drop] = False
    out = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        per_example = name not in REFERENCE and value.ndim >= 1 and value.shape[0] == n
        out[name] = value[keep] if per_example else value
    return out


def _indices(flagged: Iterable[int], n: int) -> np.ndarray:
    values = list(flagged)
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in values):
        raise ValueError("flagged indices must be integers")
    index = np.asarray(values, dtype=np.int64)
    bad = index[(index < 0) | (index >= n)]
    if bad.size:
        raise ValueError(f"flagged index {int(bad[0])} is out of range for {n} training examples")
    return np.unique(index)


def clean_file(data: str | Path, *, report: str | Path | Mapping, out: str | Path) -> dict:
    """Write the data set ``data`` without the examples ``report`` flags to ``out`` (.npz).

    Parameters
    ----------
    data : path of the audited dataset file
    report : path of a JSON report, or the report as a dict
        Its ``flagged`` indices are removed; its ``reproduce.dataset_sha256``, where it
        names one, must be the file's.
    out : path of the .npz to write (with :func:`auditor.data.save_dataset`)

    Returns
    -------
    dict with ``kept`` and ``removed`` (training examples) and ``sha256`` (of the file written).

    Raises
    ------
    DatasetError
        An unreadable or invalid dataset or report, or a report of another file.
    ValueError
        Flagged indices out of range.
    """
    dataset = load_dataset(data)
    body = _load_report(report)
    expected = (body.get("reproduce") or {}).get("dataset_sha256")
    if expected and expected != dataset.sha256:
        raise DatasetError(f"the report is of another file (dataset sha256 {expected[:12]}..., "
                           f"{Path(data).name} has {dataset.sha256[:12]}...)")
    flagged = body.get("flagged")
    if not isinstance(flagged, list):
        raise DatasetError("the report has no list of flagged examples")
    cleaned = clean_arrays(_arrays(dataset), flagged)
    sha = save_dataset(out, **cleaned)
    kept = int(cleaned["x"].shape[0])
    return {"kept": kept, "removed": dataset.n - kept, "sha256": sha}


def cleaned_bytes(data: bytes, flagged: Iterable[int]) -> bytes:
    """The bytes of a dataset file (``data``) without the ``flagged`` examples, as an .npz.

    Raises
    ------
    DatasetError, ValueError
        As :func:`clean_file`.
    """
    dataset = load_dataset(data)
    cleaned = clean_arrays(_arrays(dataset), flagged)
    with tempfile.TemporaryDirectory(prefix="auditor-clean-") as tmp:
        path = Path(tmp) / "cleaned.npz"
        save_dataset(path, **cleaned)
        return path.read_bytes()


def _arrays(dataset) -> dict[str, np.ndarray]:
    arrays = {"x": dataset.x, "y": dataset.y}
    for name in ("x_val", "y_val", "is_poison", "x_test", "y_test", "x_target", "y_target"):
        if getattr(dataset, name) is not None:
            arrays[name] = getattr(dataset, name)
    return arrays


def _load_report(report: str | Path | Mapping) -> dict:
    if isinstance(report, Mapping):
        return dict(report)
    path = Path(report)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"cannot read the report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DatasetError(f"the report {path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise DatasetError(f"the report {path} is not a JSON object")
    return body
