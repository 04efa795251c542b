"""What a strategy asks and answers: the oracle of stored outcomes, the context and the verdict.

A strategy asks an :class:`Oracle` for the outcomes of batches of trials; the oracle answers
from the outcomes stored so far and stops the strategy at the first batch it cannot answer
by raising :class:`NeedTrials` (see :func:`auditor.search.plan.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from auditor.search.stats import ALPHA
from auditor.trials import Outcome, Trial

Ask = Callable[[list[Trial]], list[Outcome]]


class NeedTrials(Exception):
    """Raised by the oracle: these trials must run before the strategy can go on."""

    def __init__(self, trials: list[Trial]):
        super().__init__(f"{len(trials)} trials needed")
        self.trials = trials


class BudgetExhausted(Exception):
    """The search budget does not cover the next batch."""


@dataclass(frozen=True)
class Context:
    """What a strategy knows besides outcomes: sizes, seeds, budget and the screen.

    Attributes
    ----------
    n : int, training examples
    seed : int, the search seed (all search trials share it: common random numbers)
    budget : int, most search trials (the confirmation round is not counted)
    confirm_seeds : int, seeds of the confirmation round (up to twice as many, see
        :func:`~auditor.search.confirm.confirm`)
    search_seeds : int, seeds every search decision is checked under
    screen : ndarray (n,) or None, suspicion scores that order the search
    screens : the named screens ``screen`` combines, ((name, scores (n,)), ...); a
        strategy may measure which one's order concentrates the harm soonest
        (:func:`~auditor.search.common.sharpest_order`)
    alpha : float, significance level of the harm gate and the confirmation
    mechanism : str or None, the name of the outcomes' extra that measures the implicit bias
        the poisons distort (``effective_rank`` of the SSM students' A); the strategies then
        flag only examples that raise it (:func:`~auditor.search.common.rank_band_of`), and a
        verdict also needs removing the flagged set to lower it (:func:`~auditor.search.confirm.confirm`)
    """

    n: int
    seed: int = 0
    budget: int = 10_000
    confirm_seeds: int = 4
    search_seeds: int = 2
    screen: np.ndarray | None = None
    screens: tuple[tuple[str, np.ndarray], ...] = ()
    alpha: float = ALPHA
    mechanism: str | None = None


@dataclass
class Verdict:
    """The strategy's answer.

    Attributes
    ----------
    flagged : sorted list of example indices judged harmful (empty if not confirmed)
    scores : ndarray (n,), higher = more harmful
    confirmation : dict, the statistics of :func:`~auditor.search.confirm.confirm`
    details : dict, strategy-specific facts for the report
    """

    flagged: list[int]
    scores: np.ndarray
    confirmation: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)


class Oracle:
    """Answers batches from stored outcomes; raises :class:`NeedTrials` for missing ones."""

    def __init__(self, outcomes: dict[str, Outcome], *, budget: int):
        self.outcomes = outcomes
        self.budget = budget
        self.search_keys: set[str] = set()

    @property
    def left(self) -> int:
        """Search trials the budget still pays for."""
        return self.budget - len(self.search_keys)

    def ask(self, trials: list[Trial], *, search: bool = True) -> list[Outcome]:
        if search:
            new = {t.key for t in trials} - self.search_keys
            if len(self.search_keys) + len(new) > self.budget:
                raise BudgetExhausted
            self.search_keys |= new
        missing = list({t.key: t for t in trials if t.key not in self.outcomes}.values())
        if missing:
            raise NeedTrials(missing)
        return [self.outcomes[t.key] for t in trials]
