"""Executors run batches of trials and stream their outcomes back.

An executor's one duty: ``run(trials)`` yields lists of outcomes as chunks finish, in any
order, each outcome carrying its trial's key. The in-process executor trains each chunk
with one batched :func:`auditor.trials.run_trials` call; the Ray executor (``workers/``)
spreads chunks over retrainer actors and calls the same function there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

from auditor.trials import AuditProblem, Outcome, Trial, run_trials


class Executor(ABC):
    """Runs trials of one audit problem."""

    @abstractmethod
    def run(self, trials: list[Trial]) -> Iterator[list[Outcome]]:
        """Yield outcomes chunk by chunk until every trial has one."""

    def close(self) -> None:
        """Release workers (nothing to do in-process)."""


class InlineExecutor(Executor):
    """Trains chunks of ``chunk_size`` trials in this process, one batched call each."""

    def __init__(self, problem: AuditProblem, *, chunk_size: int = 256):
        self.problem = problem
        self.chunk_size = chunk_size

    def run(self, trials: list[Trial]) -> Iterator[list[Outcome]]:
        for start in range(0, len(trials), self.chunk_size):
            yield run_trials(self.problem, trials[start:start + self.chunk_size])
