"""The confirmation round every search strategy ends with.

The flagged set is removed and retrained over fresh seeds, beside two comparisons under
the same seeds: all data, and a random removal of the same size. Its tests are paired
sign-flip permutation tests (:mod:`auditor.search.stats`): exact at any number of seeds and
valid where a seed's log error is bimodal (a model lands in a good or a bad basin), where a
t-test is not. A verdict stands only if each of its tests rejects at level ``alpha``
(an intersection-union test: no multiplicity correction is due).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from auditor.search.stats import bootstrap_interval, sign_flip_interval, sign_flip_test, stream
from auditor.trials import Outcome, Trial

if TYPE_CHECKING:                                                           # (no import cycle at run time)
    from auditor.search.oracle import Context, Oracle

MIN_EFFECT = math.log(1.2)   # the least harm a test counts: an error up by 20% (the confirmation's margin)
MIN_RANK_RISE = 0.1          # the least rise of the effective rank that counts as the poisons' mechanism


def log_error(outcome: Outcome) -> float:
    """The outcome's log error (errors at 1e-12 and below, and non-finite ones at 1e12, are clipped)."""
    return math.log(max(outcome.error, 1e-12)) if math.isfinite(outcome.error) else math.log(1e12)


def confirm(flagged: list[int], context: Context, oracle: Oracle) -> dict:
    """Retrain with all data, without the flagged set, and without a random set of the same
    size, over ``confirm_seeds`` fresh seeds, and up to as many again as the search's unused
    budget pays for (three trials a seed): the training's error is bimodal, so that a real
    effect needs many seeds (measured on a set of n = 50: removing its 4 poisons lowered the
    error 1.9x, t-test p = 0.11 over 8 seeds and 0.034 over 16; the error is 3.0x the clean
    examples' own over 32 seeds). The number of seeds is fixed before any of them is
    trained, so each p-value holds at its level.

    The effect is the paired difference of log errors (all minus without flagged): its
    mean, the 95% interval of the sign-flip test inverted (:func:`~auditor.search.stats.sign_flip_interval`),
    and the one-sided sign-flip p-value (:func:`~auditor.search.stats.sign_flip_test`) that
    removing the flagged set does not lower the error by more than ``MIN_EFFECT`` (20%): an
    effect too small to matter is not confirmed however consistent it is (measured on a
    clean set, n = 500: 15 clean examples whose removal lowered the error by 10% under each
    of 6 seeds, t-test p < 0.05 against no effect). The tests assume, under H0, that each seed's
    difference is symmetric about the margin (exact whatever the shape, bimodal included);
    their p-values are at least 2^-S over S seeds (0.0039 over 8), which is why
    ``AuditConfig.confirm_seeds`` is at least :func:`~auditor.search.stats.least_seeds`.

    The same test against a random removal (``p_value_vs_random``,
    ``error_ratio_vs_random``) tells the flagged set's harm from what any removal of that
    size does (in a training run that sits between two modes, removing one random example
    can move the error 5x). The random set is drawn afresh under each seed
    (:func:`random_removal`, the named stream ``confirmation/random-removal/<seed>`` of the
    audit's seed): so the seeds' pairs are independent given the flagged set, and the
    flagged set is compared with what a removal of its size does on average, not with one
    random set whose own effect would decide the test (measured in
    tests/auditor/test_search_confirm.py, where removals differ in what they do and the
    flagged set does what the average removal does: one set for all seeds, 17.5% rejections
    at level 0.05; afresh, 3.4%). It is drawn from the examples not flagged: the flagged
    set's removal is the treatment, and a random set that overlapped it would be partly
    treated (a random 80 of 1000 holds 6 of 80 flagged on average). Errors are summarized by
    their geometric mean and a percentile bootstrap interval (descriptive).

    The mechanism: the paired drop of the models' effective rank (all minus without
    flagged, ``rank_drop`` and its 95% interval as above) and the one-sided sign-flip
    p-value that it is not above ``MIN_RANK_RISE`` (``p_value_rank``). Clean-label poisons of
    an SSM work by raising the effective rank of A (all its entries rise together), so that
    removing them lowers it; a clean set's own harmful examples do not (measured over 8-16
    confirmation seeds: on three clean sets, n = 90-850, whose flagged clean examples lower
    the error 2.9-20x, the rank moved by -0.01 to -0.03 of about 7.0; on the 47 generated
    sets whose verdict stands, n = 40-1000, poisons at k, k-1 or k-2, with and without
    decoys, it fell by 0.49-2.27, t-test p <= 2e-7). The strategies
    already keep flagged only examples that raise the rank (:func:`auditor.search.common.rank_band_of`);
    this check holds the verdict to the same mechanism as a whole (measured: on a clean set
    of n = 450 it stopped clean examples that had passed those).

    Returns
    -------
    dict with ``seeds`` and ``generalization`` ({arm: :func:`summary`} for ``with_all`` and,
    where something is flagged, ``without_flagged`` and ``without_random``), and where
    something is flagged ``effect_log_ratio``, ``effect_ci95``, ``error_ratio``,
    ``p_value``, ``error_ratio_vs_random``, ``p_value_vs_random``, ``rank_drop``,
    ``rank_drop_ci95``, ``p_value_rank`` and ``diagnostics`` (:func:`diagnostics_drop`).
    """
    n = context.n
    room = oracle.left // 3 if flagged else 0                               # (the oracle never overspends)
    seeds = [context.seed + 1000 + j for j in range(context.confirm_seeds + min(context.confirm_seeds, room))]
    trials = [Trial(np.ones(n, bool), s) for s in seeds]
    if flagged:
        others = np.setdiff1d(np.arange(n), flagged)
        size = min(len(flagged), len(others))
        trials += [Trial.keep_all_but(n, flagged, s) for s in seeds]
        trials += [Trial.keep_all_but(n, random_removal(others, size=size, seed=context.seed, trial_seed=s), s)
                   for s in seeds]
    outs = oracle.ask(trials, search=False)
    k = len(seeds)
    groups = {"with_all": outs[:k]}
    if flagged:
        groups["without_flagged"] = outs[k:2 * k]
        groups["without_random"] = outs[2 * k:]
    result = {"seeds": seeds,
              "generalization": {name: summary(o, rng=stream(context.seed, f"confirmation/bootstrap/{name}"))
                                 for name, o in groups.items()}}
    if flagged:
        result.update(paired_effect(log_ratios(groups["with_all"], groups["without_flagged"]), margin=MIN_EFFECT,
                                    rng=stream(context.seed, "confirmation/flips/effect")))
        vs_random = paired_effect(log_ratios(groups["without_random"], groups["without_flagged"]),
                                  rng=stream(context.seed, "confirmation/flips/vs-random"))
        result.update(error_ratio_vs_random=vs_random["error_ratio"], p_value_vs_random=vs_random["p_value"])
        drop = np.array([a.extra(context.mechanism) - b.extra(context.mechanism)
                         for a, b in zip(groups["with_all"], groups["without_flagged"])])   # (seeds,)
        rank = paired_effect(drop[np.isfinite(drop)], margin=MIN_RANK_RISE,
                             rng=stream(context.seed, "confirmation/flips/rank"))
        result.update(rank_drop=rank["effect_log_ratio"], rank_drop_ci95=rank["effect_ci95"],
                      p_value_rank=rank["p_value"])
        result["diagnostics"] = diagnostics_drop(groups["with_all"], groups["without_flagged"], seed=context.seed)
    return result


def diagnostics_drop(with_all: list[Outcome], without: list[Outcome], *, seed: int) -> dict:
    """How removing the flagged set moved each of the models' diagnostics (``extras``):
    {name: {"drop", "ci95", "p_value"}}, the mean paired drop (all minus without flagged),
    its 95% sign-flip interval and the one-sided sign-flip p-value of no drop.

    Evidence for the report, not a decision: beside the effective rank of A (the mechanism,
    tested above against ``MIN_RANK_RISE``), the SSM students report the effective rank of the
    learned kernel's Hankel matrix (:func:`auditor.metrics.hankel_effective_rank`), which reads
    the implicit bias on the learned function itself, whatever the parametrization.
    """
    names = sorted({name for o in with_all for name in o.extras} & {name for o in without for name in o.extras})
    out = {}
    for name in names:
        drop = np.array([a.extra(name) - b.extra(name) for a, b in zip(with_all, without)])
        test = paired_effect(drop[np.isfinite(drop)], rng=stream(seed, f"confirmation/flips/diagnostics/{name}"))
        out[name] = {"drop": test["effect_log_ratio"], "ci95": test["effect_ci95"], "p_value": test["p_value"]}
    return out


def random_removal(pool: np.ndarray, *, size: int, seed: int, trial_seed: int,
                   purpose: str = "confirmation") -> np.ndarray:
    """The random set removed beside the tested one under the trial seed ``trial_seed``:
    ``size`` examples of ``pool`` (sorted indices), drawn without replacement from the
    named stream ``<purpose>/random-removal/<trial_seed>`` of the audit's ``seed``."""
    rng = stream(seed, f"{purpose}/random-removal/{trial_seed}")
    return np.sort(rng.choice(pool, size=size, replace=False))


def summary(outs: list[Outcome], *, rng: np.random.Generator) -> dict:
    """One arm's errors: ``errors`` (per seed), ``geomean``, ``ci95`` (a percentile bootstrap
    interval of the geometric mean, from ``rng``: descriptive, see
    :func:`~auditor.search.stats.bootstrap_interval`) and ``extras`` (the mean of each of the
    models' diagnostics)."""
    logs = np.array([log_error(o) for o in outs])
    lo, hi = bootstrap_interval(logs, rng=rng)
    names = sorted({name for o in outs for name in o.extras})
    return {"errors": [o.error for o in outs], "geomean": float(np.exp(logs.mean())),
            "ci95": [float(np.exp(lo)), float(np.exp(hi))],
            "extras": {name: float(np.nanmean([o.extra(name) for o in outs])) for name in names}}


def log_ratios(a: list[Outcome], b: list[Outcome]) -> np.ndarray:
    """Paired log error ratios log error(a_j) - log error(b_j), one per seed."""
    return np.array([log_error(x) - log_error(y) for x, y in zip(a, b)])


def paired_effect(diff: np.ndarray, *, margin: float = 0.0, rng: np.random.Generator | None = None) -> dict:
    """Mean, 95% sign-flip interval and error ratio of paired log ratios, and the one-sided
    sign-flip p-value of their centre being at most ``margin`` (1 without any pair).

    Parameters
    ----------
    diff : array (S,), paired differences, one per seed
    margin : float
    rng : numpy Generator, a named stream for the random flips beyond 16 seeds

    Returns
    -------
    dict with ``effect_log_ratio`` (the mean), ``effect_ci95``, ``error_ratio`` (exp of the
    mean) and ``p_value``
    """
    diff = np.asarray(diff, float)
    if not len(diff):
        return {"effect_log_ratio": math.nan, "effect_ci95": [math.nan, math.nan], "error_ratio": math.nan,
                "p_value": 1.0}
    lo, hi = sign_flip_interval(diff, rng=rng)
    p = sign_flip_test(diff, margin=margin, rng=rng)
    return {"effect_log_ratio": float(diff.mean()), "effect_ci95": [lo, hi],
            "error_ratio": float(math.exp(diff.mean())), "p_value": p}
