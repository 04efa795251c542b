"""Which subsets to retrain next, and the verdict: pure functions of the outcomes so far.

A strategy is written as plain sequential code that asks an oracle for the outcomes of
batches of trials. The oracle answers from the outcomes stored so far and, at the first
batch it cannot answer, stops the strategy by raising
:class:`~auditor.search.oracle.NeedTrials`. :func:`plan` turns that into the pure function
the audit loop calls:

    plan(strategy, context, outcomes) -> list[Trial] (run these next) | Verdict

Replaying from the start on every call is cheap (no training happens inside), makes every
strategy resumable from stored outcomes for free, and keeps strategies free of state.

Harm is measured, not guessed: a strategy sees only what models trained on subsets show,
their generalization error and, for the SSM students, the effective rank of A, which the
poisons' mechanism raises. A screen (per-example scores from one training run) may *order*
the search; it never decides a verdict.

Strategies
----------
``core``    tests on a small core (the default for regression sets from n = 144 on, see
            :func:`resolve`): find where the harm is by removing screen-ordered prefixes,
            then test each candidate by adding it to a small random core, where one
            example's harm is large and the noise of common random numbers small.
``group``   adaptive group testing (the default otherwise): find a clean base by
            removing the most suspicious examples in growing prefixes, measure what each
            removed example does when added back, then add back the harmless ones jointly.
``loo``     leave-one-out: the effect of removing each example alone.
``banzhaf`` random half-subsets and each example's Banzhaf value (Wang & Jia, 2023).
Every strategy ends with the confirmation round of :func:`~auditor.search.confirm.confirm`.
"""

from __future__ import annotations

from typing import Callable

from auditor.search.baselines import banzhaf, leave_one_out
from auditor.search.common import CONTROLS
from auditor.search.core import CORE_SIZE, core_testing
from auditor.search.group import group_testing
from auditor.search.oracle import BudgetExhausted, Context, NeedTrials, Oracle, Verdict
from auditor.trials import Outcome, Trial


def plan(strategy: str, context: Context, outcomes: dict[str, Outcome]) -> list[Trial] | Verdict:
    """The next trials to run, or the verdict once the stored outcomes suffice."""
    oracle = Oracle(outcomes, budget=context.budget)
    try:
        return STRATEGIES[strategy](context, oracle)
    except NeedTrials as need:
        return need.trials
    except BudgetExhausted:
        raise ValueError(f"a search budget of {context.budget} trials is too small for the {strategy!r} "
                         f"strategy on {context.n} examples") from None


STRATEGIES: dict[str, Callable[[Context, Oracle], Verdict]] = {
    "group": group_testing,
    "core": core_testing,
    "loo": leave_one_out,
    "banzhaf": banzhaf,
}


GATED = frozenset({"group", "core"})    # the strategies that begin with the harm gate (outside their budget)


def resolve(strategy: str, *, n: int, budget: int | None, task: str = "regression") -> tuple[str, int]:
    """The concrete strategy and search budget for ``strategy`` (``auto`` picks).

    ``auto`` is core testing for regression sets that hold a full core and its controls
    twice over (n >= 2 (``CORE_SIZE`` + ``CONTROLS``) = 144: at least half of the set stays
    outside the candidates), else group testing: on a smaller set the core shrinks to a few
    dozen examples, on which a single clean addition moves the error as much as a poison
    (measured at n = 60: control harms up to +-0.9 in log error); and a classifier trained
    on 64 examples of ten classes says nothing about one target (measured on the digits
    benchmark, seed 0: no flag confirmed, where group testing recalls 93-100%).
    Leave-one-out and Banzhaf values cannot see a harm that one remaining poison already
    causes (see :func:`~auditor.search.group.group_testing`).
    Default budgets: n + 1 for leave-one-out, 2000 for Banzhaf; for group testing and core
    tests on regression sets as many as leave-one-out uses, but at least 160 and at most
    226, and n // 5 + 26 beyond n = 1000 (at n = 1000: 226, so with the 2 x 3 x 8 trials of
    the default config's harm gate and confirmation 274, about a quarter of the 1001 trials of
    leave-one-out;
    below it, a set whose poisons the screens do not rank first has its harmful groups left
    whole for want of trials: measured at n = 300-450 with a budget of 160), and max(160, n) on
    classification sets: one added example moves a deep classifier's target loss up to
    e^2-fold either way (measured on the digits benchmark), so group testing needs each
    removed example tested alone under every search seed, and room for the prune.
    """
    name = strategy
    if strategy == "auto":
        name = "core" if task == "regression" and n >= 2 * (CORE_SIZE + CONTROLS) else "group"
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known: auto, {', '.join(STRATEGIES)}")
    search = max(160, min(n + 1, 226), n // 5 + 26) if task == "regression" else max(160, n)
    default = {"loo": n + 1, "banzhaf": 2000}.get(name, search)
    return name, budget or default
