"""The science core runs without the service stack."""

import subprocess
import sys

SCIENCE = ["auditor.data", "auditor.config", "auditor.ssm", "auditor.train", "auditor.metrics",
           "auditor.paper", "auditor.bench", "auditor.benchmarks", "auditor.screens", "auditor.trials",
           "auditor.strategies", "auditor.executors", "auditor.audit"]
FORBIDDEN = ["ray", "sqlalchemy", "fastapi", "starlette", "alembic", "uvicorn"]


def test_science_modules_import_no_service_stack():
    code = (f"import sys\nfor m in {SCIENCE!r}: __import__(m)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
