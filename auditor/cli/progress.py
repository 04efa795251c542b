"""Progress bars on stderr: over a whole local audit, and over a server audit or scan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


def _bar(*columns, disable: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), *columns, TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
                    disable=disable)


@contextmanager
def audit_progress(*, disable: bool = False) -> Iterator[Callable[[int, int, str], None]]:
    """A bar over a local audit's trials; yields the ``progress`` callback of :func:`auditor.engine.run_audit`.

    Its total is the trials the audit expects (search budget plus confirmation), its
    description the phase (screening, search, confirmation), with the elapsed time and an ETA.
    """
    from rich.progress import MofNCompleteColumn, TextColumn

    with _bar(MofNCompleteColumn(), TextColumn("trials"), disable=disable) as bar:
        task = bar.add_task("screening", total=None)

        def progress(done: int, total: int, phase: str) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        yield progress


@contextmanager
def follow_progress(label: str, *, disable: bool = False) -> Iterator[Callable[[dict], None]]:
    """A bar over a server audit or scan (its ``progress`` in [0, 1]); yields the update for each
    polled state, with the stage or the counts per status, the elapsed time and an ETA."""
    from rich.progress import TextColumn

    with _bar(TextColumn("{task.percentage:>3.0f}%"), disable=disable) as bar:
        task = bar.add_task(label, total=1.0)

        def update(state: dict) -> None:
            bar.update(task, completed=state.get("progress", 0.0), description=f"{label}: {_stage(state)}")

        yield update


def _stage(state: dict) -> str:
    if "counts" in state:                                  # a scan
        counts = ", ".join(f"{v} {k}" for k, v in state["counts"].items() if v)
        return f"{state['status']} ({counts})"
    stage = state.get("stage") if state["status"] == "running" else None
    trials = state.get("trials_done")
    return state["status"] + (f", {stage}" if stage else "") + (f", {trials} trials" if trials else "")
