"""Load, validate and fingerprint audit datasets.

The dataset contract (docs/data.md) is a ``.npz`` archive without pickled objects
(or the same arrays as a CSV or Parquet table, one row per sequence: :mod:`auditor.tables`):

``x``        float (n, k) or (n, k, channels)   training sequences
``y``        float (n,) or (n, outputs), or int (n,) class labels
``x_val``    optional trusted reference sequences; may be longer than k
``y_val``    optional labels of the reference set (required with ``x_val``)
``is_poison`` optional bool (n,) ground truth, for benchmarks only
``x_test``   optional held-out sequences (benchmarks: where harm is measured); the audit never reads them
``y_test``   their labels (required with ``x_test``)
``x_target`` optional attacked sequences of a targeted attack; read only by a forensics audit
``y_target`` their true labels (required with ``x_target``)

A ``.ts`` file (the UCR/UEA text format) loads too: its series and labels give ``x`` and
``y`` (:func:`auditor.ucr.load_ts_dataset`; needs ``auditor[data]``).

Every check raises :class:`DatasetError` with one line that says what is wrong, so the
CLI and the API can report it without a traceback.

Reading is bounded: each member's ``.npy`` header is read first and its declared shape and
dtype are checked against what the limits still allow before any array data is read, and
members are read with bounded reads, so neither a crafted header nor a compression bomb
(nor a zip that lies about its sizes) costs more memory than the limits allow.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

REQUIRED = ("x", "y")
OPTIONAL = ("x_val", "y_val", "is_poison", "x_test", "y_test", "x_target", "y_target")
HELD_OUT = ("test", "target")     # optional (x_<name>, y_<name>) pairs the audit never reads
KNOWN = REQUIRED + OPTIONAL


class DatasetError(ValueError):
    """The file is not a valid audit dataset; the message says why, in one line."""


class DatasetTooLarge(DatasetError):
    """The arrays would take more memory than the limits allow (decompressed size or ratio)."""


@dataclass(frozen=True)
class Dataset:
    """A validated audit dataset.

    Attributes
    ----------
    x : ndarray, (n, k) or (n, k, channels), float64
    y : ndarray, (n,) or (n, outputs) float64, or (n,) int64 class labels
    x_val, y_val : ndarray or None
        Trusted reference set; ``x_val`` may have a longer time axis than ``x``.
    is_poison : ndarray of bool (n,) or None
        Ground truth. The detector never reads it; reports use it for evaluation.
    sha256 : str
        Hex digest of the file bytes the dataset was loaded from.
    x_test, y_test, x_target, y_target : ndarray or None
        A benchmark's held-out split and attacked sequences; the audit never reads them.
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    is_poison: np.ndarray | None
    sha256: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_target: np.ndarray | None = None
    y_target: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def length(self) -> int:
        return int(self.x.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.x.ndim == 2 else int(self.x.shape[2])

    @property
    def task(self) -> str:
        """``"classification"`` for integer labels, else ``"regression"``."""
        return "classification" if np.issubdtype(self.y.dtype, np.integer) else "regression"

    @property
    def has_reference(self) -> bool:
        return self.x_val is not None

    def summary(self) -> dict:
        """Metadata that is safe to store and show (no arrays, no ground truth)."""
        return {
            "sha256": self.sha256,
            "n": self.n,
            "length": self.length,
            "channels": self.channels,
            "outputs": 1 if self.y.ndim == 1 else int(self.y.shape[1]),
            "task": self.task,
            "n_val": None if self.x_val is None else int(self.x_val.shape[0]),
            "length_val": None if self.x_val is None else int(self.x_val.shape[1]),
            "has_ground_truth": self.is_poison is not None,
            "n_target": None if self.x_target is None else int(self.x_target.shape[0]),
        }


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


DEFAULT_MAX_ARRAY_BYTES = 1 << 30     # 1 GiB of decompressed arrays
MIN_RATIO_ALLOWANCE = 1 << 20         # a file may always expand to 1 MiB, whatever its ratio
NPY_SUFFIX = ".npy"


def load_dataset(source: str | Path | bytes | BinaryIO, *, max_bytes: int | None = None,
                 max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
                 max_expansion_ratio: float | None = None) -> Dataset:
    """Read and validate a dataset from a path, raw bytes or a binary file object.

    Parameters
    ----------
    source : path, bytes or binary file object
    max_bytes : int, optional
        Refuse inputs larger than this many bytes.
    max_array_bytes : int
        Refuse archives whose arrays take more than this many bytes once decompressed
        (a small compressed file can expand enormously).
    max_expansion_ratio : float, optional
        Refuse archives whose arrays take more than this many times the file's size
        (at least :data:`MIN_RATIO_ALLOWANCE` bytes are always allowed); None: no ratio cap.

    Raises
    ------
    DatasetError
        With a one-line message naming what is wrong (:class:`DatasetTooLarge` for the
        size limits).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DatasetError(f"no such file: {path}")
        if path.suffix.lower() == ".ts":
            from auditor.ucr import load_ts_dataset

            return load_ts_dataset(path, max_bytes=max_bytes, max_array_bytes=max_array_bytes)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = source.read()
    if max_bytes is not None and len(data) > max_bytes:
        raise DatasetTooLarge(f"file is {len(data)} bytes, over the limit of {max_bytes}")
    return parse_dataset(data, max_array_bytes=max_array_bytes, max_expansion_ratio=max_expansion_ratio)


def parse_dataset(data: bytes, *, max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
                  max_expansion_ratio: float | None = None) -> Dataset:
    """Validate the bytes of an ``.npz`` archive, or of a Parquet or CSV table (told apart
    by content, see :mod:`auditor.tables`); see :func:`load_dataset`."""
    if not data:
        raise DatasetError("file is empty")
    allowance = max_array_bytes
    if max_expansion_ratio is not None:
        allowance = min(allowance, max(MIN_RATIO_ALLOWANCE, int(max_expansion_ratio * len(data))))
    if zipfile.is_zipfile(io.BytesIO(data)):
        arrays = read_arrays(data, allowance=allowance, max_array_bytes=max_array_bytes,
                             max_expansion_ratio=max_expansion_ratio)
    else:
        from auditor.tables import table_arrays

        arrays = table_arrays(data, allowance=allowance)
    return validate_arrays(arrays, sha256=sha256_bytes(data))


def read_arrays(data: bytes, *, allowance: int, max_array_bytes: int | None = None,
                max_expansion_ratio: float | None = None) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` archive, reading at most ``allowance`` bytes of array data.

    Every member must be an ``.npy`` file named for a known array. Its header is read
    first; the array is read only if its declared size (counted as the audit converts it,
    see :func:`_charge`) fits what is left of the allowance, with reads bounded by that
    size (the sizes the zip declares are not trusted).

    Raises
    ------
    DatasetTooLarge
        The arrays would take more than ``allowance`` bytes.
    DatasetError
        Any other problem, in one line.
    """
    arrays: dict[str, np.ndarray] = {}
    left = allowance
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = [_array_name(info.filename) for info in members]
            _check_names(names)
            for info, name in zip(members, names):
                with archive.open(info) as member:
                    array = _read_member(member, name, left, allowance, max_array_bytes, max_expansion_ratio)
                left -= _charge(name, array.shape, array.dtype)
                arrays[name] = array
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError, zlib.error) as exc:
        raise DatasetError(f"unreadable .npz: {_one_line(exc)}") from None
    return arrays


def _array_name(filename: str) -> str:
    if not filename.endswith(NPY_SUFFIX) or len(filename) == len(NPY_SUFFIX):
        raise DatasetError(f"archive member {filename[:100]!r} is not an .npy array")
    return filename[:-len(NPY_SUFFIX)]


def _check_names(names: list[str]) -> None:
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        shown = ", ".join(name[:100] for name in unknown[:5])
        raise DatasetError(f"unknown array(s): {shown}; allowed: {', '.join(KNOWN)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(f"array(s) stored more than once: {', '.join(repeated)}")


def _read_member(member, name: str, left: int, allowance: int, max_array_bytes: int | None,
                 max_expansion_ratio: float | None) -> np.ndarray:
    """One ``.npy`` member: header first, then exactly the declared bytes, if they fit."""
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(member)
    else:
        raise DatasetError(f"unreadable .npz: {name}.npy has unsupported .npy format version "
                           f"{version[0]}.{version[1]}")
    if dtype.hasobject:
        raise DatasetError("archive holds pickled objects, which are refused")
    if any(d < 0 for d in shape):
        raise DatasetError(f"unreadable .npz: {name}.npy declares a negative dimension in shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if _charge(name, shape, dtype) > left:
        raise DatasetTooLarge(_too_large(name, shape, dtype, allowance, max_array_bytes, max_expansion_ratio))
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    raw = array.reshape(-1, order="A").view(np.uint8) if nbytes else None   # the array's own memory
    done = 0
    while done < nbytes:
        chunk = member.read(min(nbytes - done, 1 << 24))
        if not chunk:
            raise DatasetError(f"unreadable .npz: {name}.npy is truncated (holds {done} of {nbytes} bytes)")
        raw[done:done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
        done += len(chunk)
    if member.read(1):
        raise DatasetError(f"unreadable .npz: {name}.npy holds more data than its header declares")
    return array


def _charge(name: str, shape: tuple, dtype: np.dtype) -> int:
    """Bytes an array counts against the allowance: its size once converted for the audit
    (8 bytes an element: float64 sequences and labels, int64 classes), or as stored if
    larger; ``is_poison`` as stored."""
    itemsize = dtype.itemsize if name == "is_poison" else max(dtype.itemsize, 8)
    return math.prod(shape) * itemsize


def _too_large(name: str, shape: tuple, dtype: np.dtype, allowance: int, max_array_bytes: int | None,
               max_expansion_ratio: float | None) -> str:
    what = f"arrays take more than {allowance} bytes decompressed ({name} declares shape {shape} of {dtype})"
    if max_array_bytes is not None and allowance >= max_array_bytes:
        return f"{what}, over the limit of {max_array_bytes}"
    return f"{what}, over the limit of {max_expansion_ratio:g} times the file's size"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def validate_arrays(arrays: dict[str, np.ndarray], *, sha256: str = "") -> Dataset:
    """Check shapes, dtypes and values of the named arrays; return a :class:`Dataset`."""
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise DatasetError(f"missing array(s): {', '.join(missing)}")
    unknown = sorted(set(arrays) - set(KNOWN))
    if unknown:
        raise DatasetError(f"unknown array(s): {', '.join(unknown)}; allowed: {', '.join(KNOWN)}")

    x = _float_array(arrays["x"], "x", ndims=(2, 3))
    n = x.shape[0]
    if n == 0 or x.shape[1] == 0:
        raise DatasetError(f"x is empty (shape {x.shape})")
    y = _labels(arrays["y"], "y", n)

    x_val, y_val = _extra_split(arrays, "val", x, y)
    held_out = {}
    for name in HELD_OUT:
        held_out[f"x_{name}"], held_out[f"y_{name}"] = _extra_split(arrays, name, x, y)

    is_poison = None
    if "is_poison" in arrays:
        raw = arrays["is_poison"]
        if raw.shape != (n,):
            raise DatasetError(f"is_poison has shape {raw.shape}, expected ({n},)")
        if raw.dtype != np.bool_:
            if not np.issubdtype(raw.dtype, np.integer) or not np.isin(raw, (0, 1)).all():
                raise DatasetError(f"is_poison must be boolean, got dtype {raw.dtype}")
        is_poison = raw.astype(bool)

    return Dataset(x=x, y=y, x_val=x_val, y_val=y_val, is_poison=is_poison, sha256=sha256, **held_out)


def _extra_split(arrays: dict[str, np.ndarray], name: str, x: np.ndarray, y: np.ndarray):
    """The validated pair (x_<name>, y_<name>), or (None, None) when absent."""
    xs, ys = f"x_{name}", f"y_{name}"
    if (xs in arrays) != (ys in arrays):
        raise DatasetError(f"{xs} and {ys} must be given together")
    if xs not in arrays:
        return None, None
    x_extra = _float_array(arrays[xs], xs, ndims=(x.ndim,))
    if x_extra.shape[0] == 0 or x_extra.shape[1] == 0:
        raise DatasetError(f"{xs} is empty (shape {x_extra.shape})")
    if x.ndim == 3 and x_extra.shape[2] != x.shape[2]:
        raise DatasetError(f"{xs} has {x_extra.shape[2]} channels, x has {x.shape[2]}")
    y_extra = _labels(arrays[ys], ys, x_extra.shape[0])
    if (y_extra.dtype.kind == "i") != (y.dtype.kind == "i") or y_extra.shape[1:] != y.shape[1:]:
        raise DatasetError(f"{ys} (dtype {y_extra.dtype}, shape {y_extra.shape}) does not match y "
                           f"(dtype {y.dtype}, shape {y.shape})")
    return x_extra, y_extra


MIN_EXAMPLES = 3        # the strategies need a base, a removed example and a control
MIN_LENGTH = 2          # the gamma0 screen reads the input at position k - 1
MAX_CLASSES = 1000


def check_auditable(dataset: Dataset) -> None:
    """Raise :class:`DatasetError` unless an audit can run on ``dataset``.

    A valid file is not always auditable: every audit needs at least :data:`MIN_EXAMPLES`
    examples of length at least :data:`MIN_LENGTH`. Regression sets may have several
    channels (x (n, k, c)) and several outputs (y (n, m)); a regression set without a
    reference set is audited by the effective rank of A, which only the single-channel,
    single-output student measures, so with several channels or outputs it needs the
    trusted reference set (``x_val``, ``y_val``). A classification audit (x (n, k) or
    (n, k, c)) scores its models on a trusted split of the training length, with labels
    0..C-1, C <= :data:`MAX_CLASSES`.
    """
    if dataset.n < MIN_EXAMPLES:
        raise DatasetError(f"the audit needs at least {MIN_EXAMPLES} training sequences; got {dataset.n}")
    if dataset.length < MIN_LENGTH:
        raise DatasetError(f"the audit needs sequences of length at least {MIN_LENGTH}; got {dataset.length}")
    if dataset.task == "regression":
        outputs = 1 if dataset.y.ndim == 1 else int(dataset.y.shape[1])
        if (dataset.channels > 1 or outputs > 1) and dataset.x_val is None:
            raise DatasetError(f"a regression audit of {dataset.channels} channel(s) and {outputs} output(s) "
                               "needs a trusted reference set (x_val, y_val): the label-free audit "
                               "measures one channel and one output")
        return
    if dataset.x_val is None:
        raise DatasetError("a classification audit needs a trusted reference split (x_val, y_val)")
    if dataset.x_val.shape[1] != dataset.length:
        raise DatasetError(f"x_val has length {dataset.x_val.shape[1]}, x has {dataset.length}; "
                           "a classification audit needs equal lengths")
    classes = int(max(dataset.y.max(), dataset.y_val.max())) + 1
    if classes > MAX_CLASSES:
        raise DatasetError(f"{classes} classes: labels must be 0..C-1 with C <= {MAX_CLASSES}")


MODES = ("blind", "forensics")


def with_reference(dataset: Dataset, *, mode: str) -> Dataset:
    """The dataset as an audit in ``mode`` sees it.

    ``blind`` (the default): models are scored on the trusted reference set (``x_val``,
    ``y_val``), a clean held-out split; the defender need not know what was attacked.
    ``forensics``: on the known attacked example(s) (``x_target``, ``y_target``), which
    then stand in for the reference set: given a misclassified example, find the training
    examples behind it (as in Poison Forensics, Shan et al., 2022).

    Raises
    ------
    DatasetError
        A forensics audit of a set without ``x_target``.
    """
    if mode not in MODES:
        raise DatasetError(f"unknown audit mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "blind":
        return dataset
    if dataset.x_target is None:
        raise DatasetError("a forensics audit needs the attacked example(s): arrays x_target and y_target")
    return replace(dataset, x_val=dataset.x_target, y_val=dataset.y_target)


def save_dataset(path: str | Path, *, x, y, x_val=None, y_val=None, is_poison=None, **held_out) -> str:
    """Write a dataset in the contract format (a ``.csv`` or ``.parquet`` path: as a table,
    with :func:`auditor.tables.save_table`); return its sha256.

    ``held_out`` takes the optional ``x_test``, ``y_test``, ``x_target``, ``y_target``.
    """
    if Path(path).suffix.lower() in (".csv", ".parquet"):
        from auditor.tables import save_table

        return save_table(path, x=x, y=y, x_val=x_val, y_val=y_val, is_poison=is_poison, **held_out)
    arrays = {"x": np.asarray(x), "y": np.asarray(y)}
    for name, value in (("x_val", x_val), ("y_val", y_val), ("is_poison", is_poison), *held_out.items()):
        if value is not None:
            arrays[name] = np.asarray(value)
    validate_arrays(arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    Path(path).write_bytes(data)
    return sha256_bytes(data)


def _float_array(raw: np.ndarray, name: str, *, ndims: tuple[int, ...]) -> np.ndarray:
    if raw.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise DatasetError(f"{name} must be {want}, got shape {raw.shape}")
    if 0 in raw.shape[1:]:
        raise DatasetError(f"{name} has an empty dimension (shape {raw.shape})")
    if not (np.issubdtype(raw.dtype, np.floating) or np.issubdtype(raw.dtype, np.integer)):
        raise DatasetError(f"{name} must be numeric, got dtype {raw.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = raw.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise DatasetError(f"{name} contains NaN or infinite values")
    return out


def _labels(raw: np.ndarray, name: str, n: int) -> np.ndarray:
    if raw.ndim == 0 or raw.shape[0] != n:
        raise DatasetError(f"{name} has shape {raw.shape}, expected {n} rows to match its sequences")
    if 0 in raw.shape[1:]:
        raise DatasetError(f"{name} has an empty dimension (shape {raw.shape})")
    if np.issubdtype(raw.dtype, np.integer):
        if raw.ndim != 1:
            raise DatasetError(f"integer {name} (class labels) must be 1-D, got shape {raw.shape}")
        if (raw < 0).any():
            raise DatasetError(f"{name} has negative class labels")
        if raw.size and int(raw.max()) > np.iinfo(np.int64).max:
            raise DatasetError(f"{name} has class labels too large for int64")
        return raw.astype(np.int64)
    if not np.issubdtype(raw.dtype, np.floating):
        raise DatasetError(f"{name} must be float (regression) or int (classes), got dtype {raw.dtype}")
    if raw.ndim > 2:
        raise DatasetError(f"{name} must be 1-D or 2-D, got shape {raw.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = raw.astype(np.float64)
    if not np.isfinite(out).all():
        raise DatasetError(f"{name} contains NaN or infinite values")
    return out
