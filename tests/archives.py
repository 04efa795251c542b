"""Hand-built .npz archives for the tests of bounded loading: bare .npy headers and deflated
archives that expand far past their size."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    """An .npy header alone, declaring ``shape`` of ``descr``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def deflated_zeros(rows: int) -> bytes:
    """x (rows, 6) and y (rows,) of float64 zeros, deflated; written in 1 MiB chunks, so
    building even a bomb costs no memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, shape in (("x", (rows, 6)), ("y", (rows,))):
            with archive.open(f"{name}.npy", "w") as member:
                member.write(npy_header(shape))
                left = 8 * int(np.prod(shape))
                while left:
                    member.write(bytes(min(left, 1 << 20)))
                    left -= min(left, 1 << 20)
    return buffer.getvalue()
