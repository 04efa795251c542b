"""Executors run batches of trials and stream their outcomes back.

An executor's one duty: ``run(trials)`` yields lists of outcomes as chunks finish, in any
order, each outcome carrying its trial's key. The in-process executor trains each chunk
with one batched :func:`auditor.trials.run_trials` call; the Ray executor (``workers/``)
spreads chunks over retrainer actors and calls the same function there.

Either stops early when its ``stop`` event is set (a cancel request): ``run`` then raises
:class:`Canceled` at the next chance, and the outcomes yielded so far stand.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator

from auditor.trials import Outcome, Problem, Trial, run_trials


class Canceled(Exception):
    """The executor's stop event was set; no more trials run."""


class Executor(ABC):
    """Runs trials of one audit problem (``self.problem``)."""

    def __init__(self, problem: Problem, *, stop: threading.Event | None = None):
        self.problem = problem
        self.stop = stop or threading.Event()

    @abstractmethod
    def run(self, trials: list[Trial]) -> Iterator[list[Outcome]]:
        """Yield outcomes chunk by chunk until every trial has one."""

    def check(self) -> None:
        """Raise :class:`Canceled` if the stop event is set."""
        if self.stop.is_set():
            raise Canceled("stopped on request")

    def close(self) -> None:
        """Release workers (nothing to do in-process)."""


class InlineExecutor(Executor):
    """Trains chunks of ``chunk_size`` trials in this process, one batched call each."""

    def __init__(self, problem: Problem, *, chunk_size: int = 256, stop: threading.Event | None = None):
        super().__init__(problem, stop=stop)
        self.chunk_size = chunk_size

    def run(self, trials: list[Trial]) -> Iterator[list[Outcome]]:
        for start in range(0, len(trials), self.chunk_size):
            self.check()
            yield run_trials(self.problem, trials[start:start + self.chunk_size])
