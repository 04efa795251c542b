"""Print pip constraints that pin each core dependency to the lowest version pyproject.toml admits.

CI installs the package under these constraints and runs the science tests, so a lower bound
that no longer works fails there instead of on a user's machine. torch is left out: CI pins the
CPU build it installs from local disk.

With ``--test-tools`` it prints the ``test`` extra's own requirements instead (pytest and the
like, without ``auditor[server]`` or ``auditor[data]``): the lowest-versions job installs
those beside ``.[server]``, leaving out the ``data`` extra, whose aeon needs newer numpy and
scikit-learn than the core's lowest (its tests skip without aeon).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SKIP = {"torch"}


def lowest(requirements: list[str]) -> list[str]:
    pins = []
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([0-9][0-9A-Za-z.]*)", requirement.replace(" ", ""))
        if match is None:
            raise SystemExit(f"{requirement!r}: a dependency needs a '>=' lower bound")
        name, _, version = match.groups()
        if name.lower() not in SKIP:
            pins.append(f"{name}=={version}")
    return pins


def test_tools(project: dict) -> list[str]:
    """The ``test`` extra without the package's own extras (``auditor[...]``)."""
    return [r for r in project["optional-dependencies"]["test"] if not r.replace(" ", "").startswith("auditor[")]


if __name__ == "__main__":
    args = sys.argv[1:]
    tools = "--test-tools" in args
    paths = [a for a in args if a != "--test-tools"]
    project = tomllib.loads(Path(paths[0] if paths else "pyproject.toml").read_text())["project"]
    print("\n".join(test_tools(project) if tools else lowest(project["dependencies"])))
