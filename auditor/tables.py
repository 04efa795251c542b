"""Datasets as tables: CSV and Parquet files, one row per sequence (see docs/data.md).

Columns
-------
``x_0`` ... ``x_{k-1}``            one channel: the value at each position
``x_0_c0`` ... ``x_{k-1}_c{C-1}``   several channels: position ``t``, channel ``c`` (every pair present)
``y`` or ``y_0`` ... ``y_{m-1}``    the target; an integer column means class labels
``split``                          optional: ``train`` (the default), ``trusted`` (the reference
                                   set ``x_val``, ``y_val``), ``test`` (held out: ``x_test``,
                                   ``y_test``) or ``target`` (the attacked examples of a forensics
                                   audit: ``x_target``, ``y_target``)
``is_poison``                      optional ground truth of the training rows (benchmarks only)

The rows of other splits may be longer than the training rows: each split's sequences fill the
leading positions, every row of a split the same number, and the cells after them are empty.

:func:`table_arrays` turns the bytes of a table into the arrays of the ``.npz`` contract,
which :func:`auditor.data.validate_arrays` then checks as it checks an archive;
:func:`save_table` writes arrays as a table. Files are told apart by content: Parquet starts
with ``PAR1``; a text file whose first line names an ``x_`` or ``y`` column is read as CSV.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path

import numpy as np

from auditor.data import DatasetError, DatasetTooLarge, sha256_bytes, validate_arrays

TABLE_SUFFIXES = (".csv", ".parquet")
PARQUET_MAGIC = b"PAR1"
SPLITS = {"train": ("x", "y"), "trusted": ("x_val", "y_val"), "test": ("x_test", "y_test"),
          "target": ("x_target", "y_target")}                 # a split's rows -> the arrays they fill
CELL_BYTES = 8                   # every cell counts as a float64 (or int64) once read
X_ONE = re.compile(r"x_(0|[1-9][0-9]*)")
X_MANY = re.compile(r"x_(0|[1-9][0-9]*)_c(0|[1-9][0-9]*)")
Y_MANY = re.compile(r"y_(0|[1-9][0-9]*)")
ALLOWED = "x_<t>, x_<t>_c<c>, y, y_<j>, split, is_poison"
NOT_A_DATASET = ("not an .npz archive, a Parquet file or a CSV table with x_<t> and y columns "
                 "(see docs/data.md)")


def is_parquet(data: bytes) -> bool:
    """Whether ``data`` looks like a Parquet file (``PAR1`` at both ends)."""
    return len(data) >= 8 and data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC


def csv_header(data: bytes) -> list[str] | None:
    """The column names of a CSV table, or None when ``data`` does not start like one (not
    UTF-8 text, or no ``x_<t>``, ``x_<t>_c<c>``, ``y`` or ``y_<j>`` name in its first line)."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    line = data[:min(ends)] if ends else data
    if b"\x00" in line:
        return None
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        names = [name.strip() for name in next(csv.reader([text]), [])]
    except csv.Error:                                   # e.g. a field over the csv module's size limit
        return None
    return names if any(_kind(name) in ("x", "y") for name in names) else None


def table_arrays(data: bytes, *, allowance: int) -> dict[str, np.ndarray]:
    """The arrays (``x``, ``y``, and ``x_val``, ``y_val``, ``is_poison`` where the table has
    them) of a Parquet or CSV table, reading at most ``allowance`` bytes of cells.

    The table's size (rows x columns, 8 bytes a cell) is checked before its cells are parsed:
    from the Parquet footer, or from the CSV header and line count.

    Raises
    ------
    DatasetTooLarge
        The table holds more cells than ``allowance`` allows.
    DatasetError
        Not a table, or one that breaks the column convention, in one line.
    """
    if is_parquet(data):
        frame = _read_parquet(data, allowance)
        fmt = "Parquet"
    else:
        names = csv_header(data)
        if names is None:
            raise DatasetError(NOT_A_DATASET)
        rows = max(data.count(b"\n"), data.count(b"\r")) + (not data.endswith((b"\n", b"\r")))  # lines, header too
        _check_cells(rows, len(names), allowance)
        frame = _read_csv(data, names)
        fmt = "CSV"
    return frame_arrays(frame, fmt=fmt)


def frame_arrays(frame, *, fmt: str = "table") -> dict[str, np.ndarray]:
    """The arrays of a pandas DataFrame laid out in the column convention (unvalidated:
    pass them to :func:`auditor.data.validate_arrays`)."""
    columns = [str(name).strip() for name in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    x_names, x_shape = _x_columns(columns, fmt)
    y_names = _y_columns(columns, fmt)
    if len(frame) == 0:
        raise DatasetError(f"the {fmt} table has no rows")
    for name in x_names + y_names:
        _numeric(frame[name], name, fmt)
    split = _split(frame["split"], fmt) if "split" in columns else np.full(len(frame), "train", object)
    cells = frame[x_names].to_numpy(dtype=np.float64, na_value=np.nan)          # (rows, k * C)
    empty = np.isnan(cells).all(axis=0)                                           # (k * C,)
    if empty.any():
        raise DatasetError(f"the {fmt} column {x_names[int(np.flatnonzero(empty)[0])]} is empty in every row")

    arrays: dict[str, np.ndarray] = {}
    for part, (x_name, y_name) in SPLITS.items():
        rows = np.flatnonzero(split == part)
        if rows.size == 0:
            if part == "train":
                raise DatasetError(f"the {fmt} table has no training rows (split train)")
            continue
        what = "training" if part == "train" else part
        length = _length(cells[rows], rows, x_shape, what, fmt)
        arrays[x_name] = cells[rows].reshape((rows.size, *x_shape))[:, :length]   # (rows, length) or (.., C)
        arrays[y_name] = _y(frame, y_names, rows)
    if "is_poison" in columns:
        arrays["is_poison"] = _is_poison(frame["is_poison"], split, fmt)
    return arrays


def save_table(path: str | Path, *, x, y, x_val=None, y_val=None, is_poison=None, **held_out) -> str:
    """Write a dataset as a CSV or Parquet table (by the suffix of ``path``); return the
    sha256 of the file written.

    The arrays are validated as :func:`auditor.data.save_dataset` validates them. Training
    rows come first, then the trusted rows and the held-out ones (``held_out``: ``x_test``,
    ``y_test``, ``x_target``, ``y_target``), with a ``split`` column when there are any; rows
    shorter than the widest split leave their last cells empty, and only training rows can be
    ``is_poison``.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"a table is written as {' or '.join(TABLE_SUFFIXES)}, not {suffix or 'no suffix'}")
    arrays = {"x": np.asarray(x), "y": np.asarray(y)}
    for name, value in (("x_val", x_val), ("y_val", y_val), ("is_poison", is_poison), *held_out.items()):
        if value is not None:
            arrays[name] = np.asarray(value)
    dataset = validate_arrays(arrays)
    frame = dataset_frame(**{name: value for name, value in arrays.items() if name != "is_poison"},
                          is_poison=dataset.is_poison)
    if suffix == ".csv":
        data = frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, engine="pyarrow", index=False)
        data = buffer.getvalue()
    Path(path).write_bytes(data)
    return sha256_bytes(data)


def dataset_frame(*, x, y, is_poison=None, **others):
    """A pandas DataFrame of the arrays in the column convention (one row per sequence);
    ``others``: any of ``x_val``, ``y_val``, ``x_test``, ``y_test``, ``x_target``, ``y_target``."""
    import pandas as pd

    x = np.asarray(x)
    arrays = {"x": x, "y": y, **others}
    parts = [(np.asarray(arrays[x_name]), np.asarray(arrays[y_name]), split) for split, (x_name, y_name)
             in SPLITS.items() if arrays.get(x_name) is not None]
    length = max(part[0].shape[1] for part in parts)
    channels = None if x.ndim == 2 else x.shape[2]
    names = ([f"x_{t}" for t in range(length)] if channels is None
             else [f"x_{t}_c{c}" for t in range(length) for c in range(channels)])
    blocks = []
    for xs, ys, split in parts:
        cells = np.full((xs.shape[0], length, *xs.shape[2:]), np.nan)               # (rows, length[, C])
        cells[:, :xs.shape[1]] = xs
        block = pd.DataFrame(cells.reshape(xs.shape[0], -1), columns=names)
        if ys.ndim == 1:
            block["y"] = ys
        else:
            for j in range(ys.shape[1]):
                block[f"y_{j}"] = ys[:, j]
        if len(parts) > 1:
            block["split"] = split
        if is_poison is not None:
            block["is_poison"] = np.asarray(is_poison, bool) if split == "train" else np.zeros(len(xs), bool)
        blocks.append(block)
    return pd.concat(blocks, ignore_index=True)


def _kind(name: str) -> str | None:
    if X_ONE.fullmatch(name):
        return "x"
    if X_MANY.fullmatch(name):
        return "xc"
    if name == "y" or Y_MANY.fullmatch(name):
        return "y"
    if name in ("split", "is_poison"):
        return name
    return None


def _x_columns(columns: list[str], fmt: str) -> tuple[list[str], tuple[int, ...]]:
    """The x columns in array order, and the shape of one row's sequence: (k,) or (k, C)."""
    _check_names(columns, fmt)
    one = [int(X_ONE.fullmatch(name).group(1)) for name in columns if _kind(name) == "x"]
    many = [tuple(int(g) for g in X_MANY.fullmatch(name).groups()) for name in columns if _kind(name) == "xc"]
    if one and many:
        raise DatasetError(f"the {fmt} table mixes x_<t> and x_<t>_c<c> columns; use one form")
    if one:
        k = max(one) + 1
        missing = sorted(set(range(k)) - set(one))
        if missing:
            raise DatasetError(f"the {fmt} table has x_0..x_{k - 1} but no column x_{missing[0]}")
        return [f"x_{t}" for t in range(k)], (k,)
    if many:
        k = max(t for t, _ in many) + 1
        c = max(ch for _, ch in many) + 1
        missing = sorted(set((t, ch) for t in range(k) for ch in range(c)) - set(many))
        if missing:
            t, ch = missing[0]
            raise DatasetError(f"the {fmt} table has positions 0..{k - 1} and channels 0..{c - 1} "
                               f"but no column x_{t}_c{ch}")
        return [f"x_{t}_c{ch}" for t in range(k) for ch in range(c)], (k, c)
    raise DatasetError(f"the {fmt} table has no x columns (x_0, x_1, ... or x_0_c0, x_0_c1, ...)")


def _check_names(columns: list[str], fmt: str) -> None:
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    mangled = [name for name in columns if "." in name and name.rsplit(".", 1)[0] in columns]
    if repeated or mangled:
        raise DatasetError(f"the {fmt} table has column {(repeated or mangled)[0].rsplit('.', 1)[0]} more than once")
    unknown = [name for name in columns if _kind(name) is None]
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        hint = ("; write the table without its index (to_csv(index=False))"
                if any(name == "" or name.startswith("Unnamed:") for name in unknown) else "")
        raise DatasetError(f"the {fmt} table has unknown column(s) {shown}; allowed: {ALLOWED}{hint}")


def _y_columns(columns: list[str], fmt: str) -> list[str]:
    many = [int(Y_MANY.fullmatch(name).group(1)) for name in columns if Y_MANY.fullmatch(name)]
    if "y" in columns and many:
        raise DatasetError(f"the {fmt} table has both y and y_<j> columns; use one form")
    if "y" in columns:
        return ["y"]
    if not many:
        raise DatasetError(f"the {fmt} table has no y column (y, or y_0, y_1, ... for several outputs)")
    m = max(many) + 1
    missing = sorted(set(range(m)) - set(many))
    if missing:
        raise DatasetError(f"the {fmt} table has y_0..y_{m - 1} but no column y_{missing[0]}")
    return [f"y_{j}" for j in range(m)]


def _numeric(column, name: str, fmt: str) -> None:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
        return
    try:
        parsed = pd.to_numeric(column, errors="coerce")
    except (TypeError, ValueError):                       # cells no number parser takes (lists, mappings)
        parsed = pd.Series(np.nan, index=column.index)
    bad = np.flatnonzero((column.notna() & parsed.isna()).to_numpy())
    if bad.size:
        value = str(column.iloc[int(bad[0])])[:40]
        raise DatasetError(f"the {fmt} column {name} has a non-numeric value {value!r} in row {int(bad[0]) + 1}")
    raise DatasetError(f"the {fmt} column {name} must be numeric, got {column.dtype}")


def _split(column, fmt: str) -> np.ndarray:
    """Each row's split name (object (rows,))."""
    values = column.astype(object).where(column.notna(), None).tolist()
    labels = [value.strip().lower() if isinstance(value, str) else value for value in values]
    for row, label in enumerate(labels):
        if label not in SPLITS:
            shown = "an empty cell" if label is None else f"{str(label)[:40]!r}"
            raise DatasetError(f"the {fmt} column split has {shown} in row {row + 1}; "
                               f"allowed: {', '.join(SPLITS)}")
    return np.array(labels, object)


def _length(cells: np.ndarray, rows: np.ndarray, shape: tuple[int, ...], what: str, fmt: str) -> int:
    """The common length of the sequences ``cells`` (rows, k * C): filled leading positions,
    empty trailing ones."""
    filled = ~np.isnan(cells).reshape((len(cells), *shape))                      # (rows, k[, C])
    if filled.ndim == 3:
        partial = filled.any(axis=2) & ~filled.all(axis=2)
        if partial.any():
            r, t = np.argwhere(partial)[0]
            raise DatasetError(f"the {fmt} table's row {int(rows[r]) + 1} has some channels of position {t} "
                               "empty and others not")
        filled = filled.all(axis=2)
    lengths = filled.sum(axis=1)                                                  # (rows,)
    gaps = filled[:, 1:] & ~filled[:, :-1]
    if gaps.any():
        r, t = np.argwhere(gaps)[0]
        raise DatasetError(f"the {fmt} table's row {int(rows[r]) + 1} has an empty cell at position {t} before "
                           "filled ones (NaN or a missing value)")
    if lengths.min() != lengths.max():
        r = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DatasetError(f"the {fmt} table's {what} rows have different lengths ({int(lengths[0])} in row "
                           f"{int(rows[0]) + 1}, {int(lengths[r])} in row {int(rows[r]) + 1}); "
                           "fill every position or leave the same trailing cells empty")
    if lengths[0] == 0:
        raise DatasetError(f"the {fmt} table's {what} rows have no x values")
    return int(lengths[0])


def _y(frame, names: list[str], rows: np.ndarray) -> np.ndarray:
    import pandas as pd

    block = frame[names].iloc[rows]
    integer = all(pd.api.types.is_integer_dtype(block[name].dtype) for name in names)
    if integer and not block.isna().any().any():
        values = block.to_numpy(dtype=np.int64)
    else:
        values = block.to_numpy(dtype=np.float64, na_value=np.nan)
    return values[:, 0] if names == ["y"] else values                             # (rows,) or (rows, m)


def _is_poison(column, split: np.ndarray, fmt: str) -> np.ndarray:
    """The ground truth of the training rows; other rows must leave it empty or false."""
    flags = []
    for row, value in enumerate(column.astype(object).where(column.notna(), None).tolist()):
        flag = _flag(value)
        if flag is None and not (value is None and split[row] != "train"):
            shown = "an empty cell" if value is None else f"{str(value)[:40]!r}"
            raise DatasetError(f"the {fmt} column is_poison has {shown} in row {row + 1}; "
                               "allowed: true/false or 1/0")
        if flag and split[row] != "train":
            raise DatasetError(f"the {fmt} table's row {row + 1} is {split[row]} but marked is_poison")
        flags.append(bool(flag))
    return np.array(flags, bool)[split == "train"]


def _flag(value) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    return None


def _check_cells(rows: int, columns: int, allowance: int) -> None:
    if rows * columns * CELL_BYTES > allowance:
        raise DatasetTooLarge(f"table of {rows} rows x {columns} columns takes more than {allowance} bytes "
                              f"as {CELL_BYTES}-byte numbers")


def _read_csv(data: bytes, names: list[str]):
    """The CSV as a DataFrame; the x columns are parsed straight to float64 (a text cell
    there fails the parse instead of filling the frame with Python strings)."""
    import pandas as pd

    numbers = {i: "float64" for i, name in enumerate(names) if _kind(name) in ("x", "xc")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)     # rows longer than the header
            return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", float_precision="round_trip",
                               dtype={**numbers, **{i: object for i, name in enumerate(names) if name == "split"}},
                               index_col=False, low_memory=False, skipinitialspace=True)
    except (ValueError, TypeError, OverflowError, IndexError, OSError, pd.errors.ParserWarning) as exc:
        bad = _text_cell(data, names, numbers) if isinstance(exc, ValueError) else None
        if bad is not None:
            column, row, cell = bad
            raise DatasetError(f"the CSV column {column} has a non-numeric value {cell[:40]!r} in row {row}") from None
        raise DatasetError(f"unreadable CSV: {_one_line(exc)}") from None


NA_TEXT = {"", "NA", "N/A", "n/a", "NaN", "-NaN", "nan", "-nan", "null", "NULL", "None", "#N/A", "#N/A N/A", "#NA",
           "<NA>", "1.#IND", "-1.#IND", "1.#QNAN", "-1.#QNAN"}       # the cells pandas reads as missing


def _text_cell(data: bytes, names: list[str], numbers: dict[int, str]) -> tuple[str, int, str] | None:
    """The first x cell that is not a number: (column, row counted from 1, cell); None if
    there is none. Reads one row at a time."""
    try:
        reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
        next(reader, None)
        for row, cells in enumerate(reader, start=1):
            for i in numbers:
                cell = cells[i].strip() if i < len(cells) else ""
                if cell not in NA_TEXT and not _is_float(cell):
                    return names[i], row, cell
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(data: bytes, allowance: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(io.BytesIO(data))
        meta = source.metadata
        _check_cells(meta.num_rows, meta.num_columns, allowance)
        unpacked = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if unpacked > allowance:
            raise DatasetTooLarge(f"Parquet columns take {unpacked} bytes uncompressed, more than {allowance}")
        return source.read().to_pandas()
    except DatasetError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OverflowError, IndexError, OSError) as exc:
        raise DatasetError(f"unreadable Parquet: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
