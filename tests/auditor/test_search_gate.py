"""The harm gate (auditor.search.gate): a tested decision on fresh seeds."""

import numpy as np

from auditor.search.gate import harm_gate
from auditor.search.oracle import Context, NeedTrials, Oracle
from auditor.trials import Outcome


def _gate(context, order, errors, error_of):
    outcomes = {}
    while True:
        try:
            return harm_gate(context, Oracle(outcomes, budget=0), {"combined": order}, {"combined": errors})
        except NeedTrials as need:
            outcomes.update({t.key: Outcome(key=t.key, error=error_of(t.mask, t.seed), train_loss=0.0,
                                            converged=True, steps=1) for t in need.trials})


def test_the_gate_tests_the_best_prefix_on_fresh_seeds_outside_the_search_budget():
    n = 40
    order = np.arange(n)
    errors = {1: np.array([1.0, 1.0]), 4: np.array([0.1, 0.2]), 8: np.array([0.3, 0.3])}
    context = Context(n=n, seed=3, confirm_seeds=6, search_seeds=2)
    gate = _gate(context, order, errors, lambda mask, seed: 0.1 if not mask[:4].any() else 1.0)
    assert gate["size"] == 4
    assert not set(gate["seeds"]) & {3, 4}                               # not the search seeds
    assert gate["open"] and gate["p_value"] <= 1 / 64 and gate["error_ratio"] > 9


def test_a_removal_that_only_helps_as_any_removal_does_keeps_the_gate_shut():
    # Less data, lower error: removing any 4 examples helps as much as the prefix does.
    n = 40
    order = np.arange(n)
    errors = {4: np.array([0.5, 0.5])}

    def fewer_is_better(mask, seed):
        return 0.1 * mask.sum() / n

    gate = _gate(Context(n=n, confirm_seeds=8), order, errors, fewer_is_better)
    assert not gate["open"]
    assert gate["p_value_vs_random"] > 0.05


def test_on_clean_sets_the_gate_opens_at_most_alpha_of_the_time():
    # No example matters: every trained error is noise (log-normal, bimodal basins). Over 400
    # sets the gate opens at most alpha of the time (the upper 95% Clopper-Pearson bound).
    from auditor.search.stats import clopper_pearson
    n, opened, sets = 30, 0, 400
    for k in range(sets):
        def noise(mask, seed, k=k):
            rng = np.random.default_rng([k, seed, int(mask @ (1 << np.arange(n) % 61))])
            return float(np.exp(rng.normal()) * (10.0 if rng.random() < 0.2 else 1.0))
        errors = {s: np.exp(np.random.default_rng([k, s]).normal(size=2)) for s in (1, 2, 4, 8, 15)}
        opened += _gate(Context(n=n, seed=k, confirm_seeds=6), np.random.default_rng(k).permutation(n),
                        errors, noise)["open"]
    lo, _ = clopper_pearson(opened, sets)
    assert lo < 0.05
