"""docs/library.md: its example runs as written and does what the page says."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "library.md"


def test_the_library_page_example_runs_and_flags_the_poisons(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(# audit_arrays\.py\n.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    (tmp_path / "audit_arrays.py").write_text(blocks[0], encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "audit_arrays.py"), run_name="__main__")
    out = capsys.readouterr().out
    precision, recall = map(float, re.search(r"^precision (\S+) recall (\S+)$", out, flags=re.M).groups())
    assert precision >= 0.9 and recall >= 0.9, out
    assert (tmp_path / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
