"""Check an install of the package without its `server` extra: the library and the
command line work, and nothing of the service stack is installed or needed.

Run with the interpreter of a virtual environment made by `pip install . torch==...`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

SERVICE_STACK = ["fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "uvicorn", "ray", "pydantic_settings"]


SAME_ARRAYS = """
import sys
import numpy as np
from auditor.data import load_dataset
sets = [load_dataset(f"{sys.argv[1]}/d.{suffix}") for suffix in ("npz", "csv", "parquet")]
for name in ("x", "y", "x_val", "y_val", "is_poison"):
    assert all(np.array_equal(getattr(sets[0], name), getattr(other, name)) for other in sets[1:]), name
"""


def auditor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True)


def main() -> None:
    present = [name for name in SERVICE_STACK if importlib.util.find_spec(name) is not None]
    assert not present, f"the core install pulled in the service stack: {present}"

    version = auditor("--version")
    assert version.returncode == 0 and version.stdout.startswith("auditor "), version

    serve = auditor("serve")
    assert serve.returncode == 2 and "auditor[server]" in serve.stderr, serve

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.npz"
        made = auditor("make-benchmark", "--kind", "decoys", "--n", "60", "--seed", "3", "--out", str(data))
        assert made.returncode == 0, made
        audit = auditor("audit", str(data), "--json", "--out", str(Path(tmp) / "r.json"))
        assert audit.returncode in (0, 1), audit          # 0: nothing flagged, 1: flagged
        assert (Path(tmp) / "r.json").is_file()
        for table in ("d.csv", "d.parquet"):              # CSV and Parquet (pandas, pyarrow) are core too
            made = auditor("make-benchmark", "--kind", "decoys", "--n", "60", "--seed", "3", "--out",
                           str(Path(tmp) / table))
            assert made.returncode == 0, made
        same = subprocess.run([sys.executable, "-c", SAME_ARRAYS, tmp], capture_output=True, text=True)
        assert same.returncode == 0, same
    print("core install: library and command line work without the server extra")


if __name__ == "__main__":
    main()
