"""Print pip constraints that pin each core dependency to the lowest version pyproject.toml admits.

CI installs the package under these constraints and runs the science tests, so a lower bound
that no longer works fails there instead of on a user's machine. torch is left out: CI pins the
CPU build it installs from local disk.
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


if __name__ == "__main__":
    project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
    print("\n".join(lowest(project["dependencies"])))
