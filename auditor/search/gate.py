"""The harm gate: is there anything in the set worth searching for?

The strategies begin by removing growing prefixes of the search orders (most suspicious
first: the screens' combined order and, where several screens order the search, each
screen's own) under the search seeds. The gate picks the prefix, of any order, whose
removal gave the lowest error there and tests it afresh: retrained without the prefix and
without a random set of the same size, and with all data, under each of ``confirm_seeds``
new seeds, its paired log error ratios go through two one-sided sign-flip tests
(:func:`~auditor.search.stats.sign_flip_test`) of

    H0: removing the prefix lowers the error by at most ``MIN_EFFECT`` (against all data),
    H0': removing the prefix lowers the error by at most ``MIN_EFFECT`` more than removing
         as many random examples does,

each at level ``alpha``; the gate opens only if both reject (an intersection-union test:
no correction is due). The first asks for harm, the second that it is the prefix's: on a
clean set, removing the examples a screen ranks first may raise the error less than a
random removal does, without lowering it. The prefix is chosen on the search seeds and
tested on seeds it was not chosen on, so the one test needs no correction for the choice,
however many prefixes and orders it was chosen from (sample splitting), and on a set where
no removal lowers the error by the margin the gate opens with probability at most ``alpha``,
whatever the screen and however bimodal the training's error. A closed gate ends the
search: nothing is flagged, and the report says why.

The gate asks only that the screen's most suspicious examples, together, do measurable
harm: it has no threshold of its own on the size of the harm (the margin is the
confirmation's), so a set harmed 1.5x is searched as a set harmed 100x is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from auditor.search.confirm import MIN_EFFECT, log_ratios, paired_effect, random_removal
from auditor.search.stats import stream
from auditor.trials import Trial

if TYPE_CHECKING:                                                           # (no import cycle at run time)
    from auditor.search.oracle import Context, Oracle

GATE_SEED_OFFSET = 500      # the gate's trial seeds: seed + 500 + j, apart from the search's
                            # (seed + j, j < search_seeds) and the confirmation's (seed + 1000 + j)


def harm_gate(context: Context, oracle: Oracle, orders: dict[str, np.ndarray],
              errors: dict[str, dict[int, np.ndarray]]) -> dict:
    """Test the best prefix removal against random removals of its size on fresh seeds.

    Parameters
    ----------
    context : the search's context (``n``, ``seed``, ``confirm_seeds``, ``alpha``)
    oracle : answers the trials (outside the search budget: like the confirmation's, a
        fixed cost of 3 x ``confirm_seeds`` trials, see :func:`auditor.config.planned_trials`)
    orders : {name: ndarray (n,)}, examples from most to least suspicious
    errors : {name: {prefix size: ndarray (search seeds,)}}, the errors without the prefixes
        measured of each order

    Returns
    -------
    dict with ``order`` and ``size`` (the prefix tested: the least mean log error over the
    search seeds, the smaller prefix and then the earlier order on a tie), ``seeds``,
    ``error_ratio`` (the geometric mean over the seeds of error(all data) / error(prefix
    removed)), ``effect_ci95`` (its log, a 95% sign-flip interval), ``p_value``,
    ``error_ratio_vs_random`` and ``p_value_vs_random`` (the same against the random
    removals) and ``open`` (both p-values <= alpha).
    """
    n = context.n
    name, size = min(((name, s) for name in orders for s in errors[name]),
                     key=lambda t: (float(np.log(errors[t[0]][t[1]]).mean()), t[1]))
    prefix = np.sort(orders[name][:size])
    rest = np.setdiff1d(np.arange(n), prefix)
    seeds = [context.seed + GATE_SEED_OFFSET + j for j in range(context.confirm_seeds)]
    removals = [random_removal(rest, size=min(size, len(rest)), seed=context.seed, trial_seed=s,
                               purpose="gate") for s in seeds]
    outs = oracle.ask([Trial.keep_all_but(n, prefix, s) for s in seeds]
                      + [Trial(np.ones(n, bool), s) for s in seeds]
                      + [Trial.keep_all_but(n, r, s) for r, s in zip(removals, seeds)], search=False)
    k = len(seeds)
    harm = paired_effect(log_ratios(outs[k:2 * k], outs[:k]), margin=MIN_EFFECT,
                         rng=stream(context.seed, "gate/flips/effect"))
    own = paired_effect(log_ratios(outs[2 * k:], outs[:k]), margin=MIN_EFFECT,
                        rng=stream(context.seed, "gate/flips/vs-random"))
    return {"order": name, "size": int(size), "seeds": seeds, "error_ratio": harm["error_ratio"],
            "effect_ci95": harm["effect_ci95"], "p_value": harm["p_value"],
            "error_ratio_vs_random": own["error_ratio"], "p_value_vs_random": own["p_value"],
            "open": bool(max(harm["p_value"], own["p_value"]) <= context.alpha)}
