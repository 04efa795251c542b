"""Tests on a small core (:func:`core_testing`): each candidate is added to a small random
core, where one example's harm is large and the noise of common random numbers small.

Measured facts behind it: one poison among hundreds of examples may do no visible harm on
its own, while a few together ruin generalization; a poison's push on the training dynamics
grows with its share of the training set; and under common random numbers (the same seed)
adding one clean example to a set barely moves the trained model's error. So an example is
tested where its effect is large and the noise small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from auditor.search.common import (
    BASE_SHARE,
    CONTROLS,
    clean_limit,
    errors_of,
    finish,
    first_passing,
    knee_of,
    mask_with,
    mask_without,
    prefix_search,
    rank01,
    rank_band_of,
    screen_scores,
    sharpest_order,
)
from auditor.search.confirm import MIN_EFFECT, log_error
from auditor.search.oracle import BudgetExhausted, Context, Oracle, Verdict
from auditor.trials import Trial


CORE_SIZE = 64           # examples in the small core that one example is added to when tested
CORE_DRAWS = 3           # cores drawn at most, until one that every control leaves clean
# MIN_EFFECT, the least harm a test counts (20%), and MIN_RANK_RISE live in auditor.search.confirm
CLEAN_RATIO = math.log(1.5)  # errors within 1.5x of each other are equally clean (the product's criterion)
NULL_DRAWS = 3           # random removals the weaker candidates' joint removal is compared with
CHUNK = 32               # candidates tested one by one per round at the top of the screen order
DENSE = (3 - math.sqrt(5)) / 2   # share of harmful examples from which no group test beats testing
                                 # each example alone (Ungar, 1960: p >= 0.382)


def core_testing(context: Context, oracle: Oracle) -> Verdict:
    """Find the examples that measurably harm generalization, by tests on a small clean core.

    1. *Where the harm is* (:func:`_where`): the prefix search and the harm gate, the
       order followed, its knee and how far the candidates reach.
    2. *A core and controls* (:func:`_pick_core`), drawn at random from beyond the reach.
    3. *Tests*: each candidate added to the core (:func:`_test`), one at a time while harm is
       dense (:func:`_one_by_one`), else in groups split while harmful (:func:`_in_groups`).
    4. *Joint check* (:func:`_judge`): the clearly harmful, and the fewest weaker ones that
       leave the rest clean; while the rest is not clean, the candidates double, past the
       reach too: the screen orders the candidates, it does not cap them (a poison the
       screens rank last costs trials, not recall).
    5. *Mechanism* (:func:`_with_mechanism`), where the outcomes' effective rank measures the
       implicit bias.
    6. Confirm over fresh seeds (:func:`~auditor.search.confirm.confirm`).

    Every decision is measured on retrained models; the screen only orders the search
    (which examples are candidates, which form the core).
    """
    full, orders, errors, best, details = prefix_search(context, oracle)
    if "reason" in details:                                                 # nothing to search for
        return finish([], screen_scores(context), context, oracle, details)
    order, knee, reach, controls, pool = _where(context, oracle, orders, full, errors, best, details)
    core = _pick_core(context, oracle, controls, pool, reach, best, full, details)
    candidates = _candidates(order, orders["combined"], min(2 * knee, reach), core.mask, controls)
    limit = clean_limit(best, float(full.min()), BASE_SHARE)               # the clean base's level
    band = max(math.log(limit / best), CLEAN_RATIO)
    reserve = context.search_seeds * (2 + NULL_DRAWS + math.ceil(math.log2(reach + 1)))  # kept for the joint checks
    tested, size, flagged, dense, group = 0, min(2 * knee, reach), [], True, 1
    while True:
        try:
            tested, dense = _one_by_one(core, candidates, tested, size, reserve, dense)
            new = [int(i) for i in candidates[tested:size]]
            group = max(1, math.ceil(2 * len(new) * len(core.seeds) / max(oracle.left - reserve, 1)))
            _in_groups(core, new, group, reserve, details)
        except BudgetExhausted:
            details["budget"] = "exhausted while testing: untested candidates are not flagged"
        tested = size
        flagged, used, clean = _judge(core, candidates[:tested], limit, band, details)
        details.update(candidates=int(tested), group_size=group, weak_flagged=used)
        if clean or size >= len(candidates) or "budget" in details:
            break
        size = min(2 * size, len(candidates))
    flagged = _with_mechanism(core, candidates[:tested], flagged, details)
    return finish(flagged, _scores(core, flagged), context, oracle, details)


def _where(context: Context, oracle: Oracle, orders: dict[str, np.ndarray], full: np.ndarray,
           errors: dict[str, dict[int, np.ndarray]], best: float,
           details: dict) -> tuple[np.ndarray, int, int, list[int], np.ndarray]:
    """Where the harm is: the order the search follows, its knee, its reach, the controls and
    the pool the cores are drawn from.

    The prefix search (:func:`~auditor.search.common.prefix_search`) removed growing prefixes
    of the search orders (most suspicious first) and the harm gate opened; an order's knee is
    its smallest prefix that undoes at least half of the harm (in log error), and the search
    follows the order whose knee is least (:func:`~auditor.search.common.sharpest_order`).
    The first candidates are the first twice-the-knee examples of the order: the margin holds
    weaker poisons that the screen ranks later (:func:`_candidates`); the reach, four times
    the knee, at most half of the set, bounds the first rounds and where the core comes from.

    The controls and the core are seeded random samples of the examples beyond every candidate
    the search may reach (:func:`controls_and_pool`): random, so that they are typical (the
    screen's least suspicious tail holds the smallest, least informative sequences, on which a
    model does not learn to extrapolate); drawn from the indices, not the screen's order, so
    that a reordering beyond ``reach`` draws the same core (measured on a clean set, n = 300:
    screens that differed only in their checkpoints' spacing drew another core from the same
    292 examples, and that core's audit flagged 5 examples). Where the search follows one
    screen's order, they lie beyond the combined order's reach too, where that leaves room.
    """
    n = context.n
    half = max(math.sqrt(best * float(full.min())), best)                  # (the gate tested fresh seeds)
    name, order, followed = sharpest_order(context, oracle, orders, errors, half)   # the order the search follows
    knee = knee_of(followed, half)
    reach_combined = min(4 * (knee_of(errors["combined"], half) or n), n // 2)
    reach = min(4 * knee, n // 2)                                           # at least half the set stays out
    details.update(knee=int(knee), order=name, reach_combined=reach_combined)
    controls, pool = controls_and_pool(context, order[reach:], orders["combined"][:reach_combined])
    return order, knee, reach, controls, pool


def _candidates(followed: np.ndarray, combined: np.ndarray, head: int, core: np.ndarray,
                controls: list[int]) -> np.ndarray:
    """Every example but the core and the controls, in the order they are tested: the
    followed order's first ``head``, then the rest in the combined order.

    The followed order was chosen because removing its prefixes repairs the set soonest,
    which need not mean that its examples harm one by one: clean examples can carry the
    harm that the poisons cause (measured on a set of n = 794 with 71 poisons at the last
    position: removing trace_push's first 99, all clean, lowered the error to 0.05-0.06 under
    5 of 6 seeds, from 0.10-0.18 with all data, while it ranked the poisons at 723-793; the
    search followed it, found its first candidates harmless and ran out of budget before
    reaching a poison). Beyond its head every screen has its share (the combined order takes
    each example at its highest rank over the screens), so an order that leads the search
    astray costs the tests of its head, not the search's recall."""
    sequence = np.concatenate([followed[:head], combined])                  # (head + n,)
    _, first = np.unique(sequence, return_index=True)
    sequence = sequence[np.sort(first)]                                     # (n,) each example once
    return sequence[~mask_with(core, controls)[sequence]]


@dataclass
class _Core:
    """A core and what the tests on it measured.

    ``harm`` (S, n) holds each tested example's log error ratio to the reference (its group's
    while it was not tested alone; NaN where untested), ``rise`` (S, n) its rise of the
    mechanism's statistic over the controls' centre, ``alone`` (n,) which were tested alone;
    ``tau`` (S,) is the threshold of the clearly harmful, ``weak`` (S,) the level of the
    weaker candidates; ``mechanism`` is (the statistic's name, centre (S,), band (S,)) or None.
    """

    context: Context
    oracle: Oracle
    seeds: list[int]
    controls: list[int]
    pool: np.ndarray
    mask: np.ndarray
    error: np.ndarray
    harm: np.ndarray
    tau: np.ndarray
    weak: np.ndarray
    mechanism: tuple[str, np.ndarray, np.ndarray] | None
    rise: np.ndarray
    alone: np.ndarray

    def test(self, groups: list[list[int]], threshold: np.ndarray, reserve: int | None = None) -> list[list[int]]:
        """:func:`_test` of ``groups`` on this core; returns the groups left whole."""
        return _test(self.oracle, self.seeds, self.mask, self.error, groups, self.harm, threshold, self.alone,
                     reserve, rise=self.rise, mechanism=self.mechanism)

    def past_tau(self, examples) -> np.ndarray:
        """Whether each of the ``examples`` did harm past the threshold under every seed."""
        return (self.harm[:, examples] > self.tau[:, None]).all(axis=0)

    def past_weak(self, g: list[int]) -> bool:
        """Whether the group g did more harm than the weaker candidates' level under some seed."""
        return bool((self.harm[:, g[0]] > self.weak).any())

    def shows(self, i: int) -> bool:
        """Whether example i (or the smallest group it was tested in) raised the core's rank
        past the band under every seed (false where that was not measured)."""
        return bool((self.rise[:, i] > self.mechanism[2]).all())

    def poison_like(self, i: int) -> bool:
        """``shows(i)``, or true where there is no mechanism or it was not measured."""
        return self.mechanism is None or bool(np.isnan(self.rise[:, i]).all()) or self.shows(i)


def _pick_core(context: Context, oracle: Oracle, controls: list[int], pool: np.ndarray, reach: int,
               best: float, full: np.ndarray, details: dict) -> _Core:
    """A core of ``CORE_SIZE`` examples of the pool, so that one added example holds a large
    share of its training set, with the controls' harms measured on it.

    Every test runs under each search seed when the budget has room for testing all the
    candidates the search may reach that way (on one core), else under the first. A candidate
    is clearly harmful (``tau``) if the core with it is not clean (its log error lies more
    than ``CLEAN_SHARE`` of the way from the clean level to the full set's error, the rule
    that judges every set clean) and it does more harm than every control. The clean level is
    the reference's error or, where a core sits below it, the lowest error of the prefix
    search (measured on a set of n = 500: a core at 0.0084, whose own third of the way ended
    at 0.039, took 17 clean examples that each raised its error 4.7-fold or more, while the
    clean examples alone had 0.09 over 32 seeds). A core that a control already leaves
    unclean is fragile (it sits where any addition tips the training into a worse mode): up
    to ``CORE_DRAWS`` cores are drawn, and the first that every control leaves clean is kept
    (else the least fragile). The weaker candidates' level is the controls' largest harm, at
    least ``MIN_EFFECT``.
    """
    k = context.search_seeds
    seeds = [context.seed + j for j in range(k if k * (2 + len(controls) + reach) <= oracle.left else 1)]
    draws = []
    for d in range(CORE_DRAWS):
        core = draw_core(context, pool, d)
        core_error, harm = core_reference(oracle, context, seeds, core, controls)     # (S,), (S, n)
        anchor = np.maximum(core_error, best)                                  # (S,) the clean level
        unclean = np.maximum(np.log(clean_limit(anchor, full[:len(seeds)]) / core_error), 0.0)  # (S,)
        excess = float((harm[:, controls].max(axis=1) - unclean).max()) if controls else -1.0
        draws.append((excess, d, core, core_error, harm, unclean))
        if excess < 0:
            break
    excess, d, core, core_error, harm, unclean = min(draws, key=lambda t: (t[0], t[1]))
    null = harm[:, controls]                                                # (S, controls)
    tau = np.maximum(unclean, null.max(axis=1)) if controls else unclean    # (S,)
    details.update(core_size=int(core.sum()), core_error=float(core_error.max()), core_draws=len(draws),
                   test_seeds=len(seeds), control_harms=np.round(null, 4).tolist(), threshold=tau.tolist())
    weak = np.maximum(null.max(axis=1) if controls else 0.0, MIN_EFFECT)      # (S,)
    mechanism = None
    if context.mechanism is not None and controls:
        mechanism = (context.mechanism,
                     *rank_band_of(errors_of(oracle, [mask_with(core, [c]) for c in controls], context,
                                             seeds=seeds, rank=True)))
    return _Core(context, oracle, seeds, controls, pool, core, core_error, harm, tau, weak, mechanism,
                 rise=np.full((len(seeds), context.n), np.nan), alone=np.zeros(context.n, bool))


def _one_by_one(core: _Core, candidates: np.ndarray, tested: int, size: int, reserve: int,
                dense: bool) -> tuple[int, bool]:
    """Test the candidates from ``tested`` on one at a time, ``CHUNK`` at a time, up to ``size``,
    for as long as at least ``DENSE`` of the last chunk did harm past the threshold; returns
    how many are tested and whether the harm is still dense. Where harm is that dense, groups
    are nearly all harmful and splitting them costs more than single tests (measured: 80
    poisons in 1000, half of the order's first 152, as when one screen ranks them first and
    the others interleave their own picks; groups of six ran out of trials and nothing was
    flagged, one by one all 80 were, within 226 trials)."""
    while dense and tested < size:
        stop = min(size, tested + CHUNK, tested + (core.oracle.left - reserve) // len(core.seeds))
        new = [int(i) for i in candidates[tested:stop]]
        if not new:
            raise BudgetExhausted
        core.test([[i] for i in new], core.tau)
        tested += len(new)
        dense = bool(core.past_tau(new).mean() >= DENSE)
    return tested, dense


def _in_groups(core: _Core, new: list[int], group: int, reserve: int, details: dict) -> None:
    """Test ``new`` in groups of ``group``, splitting toward the clearly harmful first, then
    toward the weaker ones, while the ``reserve`` allows. A group the budget leaves whole is not
    flagged (measured: groups of five clean examples moved a core's error up to e^1.9-fold,
    beyond the threshold, where one control moved it at most e^0.02-fold). Where the outcomes
    measure the mechanism, only groups that raised it under some seed are split: a group
    without it holds no poison, and splitting it spends the budget on clean examples (measured
    on a set of n = 1000 with 50 poisons: budget exhausted with a poison in a group left whole,
    and the 6 clean examples flagged beside the others, unflagged for want of the mechanism,
    put their harm back: 1.68x the clean-only error; with the rank guiding the splits, 49 of
    50 and 1.04x)."""
    whole = core.test([new[i:i + group] for i in range(0, len(new), group)], core.tau, reserve)
    whole = core.test(list(filter(core.past_weak, whole)), core.weak, reserve)
    if any(map(core.past_weak, whole)):
        details["budget"] = ("exhausted while testing: harmful groups left whole are not flagged (an "
                             "example is flagged on its own harm)")


def _judge(core: _Core, tested: np.ndarray, limit: float, band: float,
           details: dict) -> tuple[list[int], int, bool]:
    """The flagged set among the ``tested`` candidates, how many weaker ones it holds, and
    whether the rest is clean without it (:func:`_least_to_remove`).

    The clearly harmful are those tested alone that passed the threshold under every seed. If
    the rest is not back near the clean level (``BASE_SHARE`` of the way from the lowest error
    without a prefix to the full set's, as group testing's clean base), the weaker candidates
    may join: those that do more harm than every control and ``MIN_EFFECT``, in the mean over
    the seeds (the training's error is bimodal: a poison may leave the core in its good mode
    under one seed), and again on a second random core (:func:`_replicate`), if removing all
    of them beats removing as many random examples by more than the clean band, and by at
    least ``CLEAN_RATIO``, in the mean over the seeds too (measured on a clean set, n = 200:
    nine clean examples whose joint removal lowered the error 1.45x beyond random removals,
    where the band was 1.26x, were flagged and confirmed).
    """
    clear = core.alone & core.past_tau(slice(None))                        # (n,) harmful on their own
    strong = [int(i) for i in tested if clear[i]]
    weaker = [int(i) for i in tested
              if core.harm[:, i].mean() > core.weak.mean() and not clear[i] and core.poison_like(int(i))]
    try:
        return _least_to_remove(core.oracle, core.context, strong, lambda: _replicate(core, weaker, details),
                                limit, band, core.pool, details)
    except BudgetExhausted:
        details.setdefault("budget", "exhausted during the joint check: only the clearly harmful are flagged")
        return sorted(strong), 0, False


def _replicate(core: _Core, weaker: list[int], details: dict) -> list[int]:
    """The weaker candidates whose harm replicates on a second random core (on small sets it
    shares most of the first's examples), under the last search seed: more than every
    control's there and ``MIN_EFFECT``; most harmful first (least harm over both cores)."""
    context = core.context
    seed = [context.seed + context.search_seeds - 1]
    second = draw_core(context, core.pool, CORE_DRAWS)
    second_error, again = core_reference(core.oracle, context, seed, second, core.controls)
    _test(core.oracle, seed, second, second_error, [[i] for i in weaker], again, np.full(1, np.inf))
    level = max(float(np.max(again[0, core.controls], initial=0.0)), MIN_EFFECT)
    kept = [i for i in weaker if again[0, i] > level]
    details.update(replicated=f"{len(kept)} of {len(weaker)}", second_core_error=float(second_error[0]))
    return sorted(kept, key=lambda i: -min(core.harm[:, i].min(), again[0, i]))


def _with_mechanism(core: _Core, tested: np.ndarray, flagged: list[int], details: dict) -> list[int]:
    """Where the outcomes' effective rank measures the implicit bias: a flagged example stays
    flagged only if it, or the smallest group it was tested in, raised the core's effective
    rank beyond what every control did under every seed (:func:`~auditor.search.common.rank_band_of`;
    no training); and a candidate tested alone that raised it so and did more harm than
    ``MIN_EFFECT`` in the mean over the seeds is flagged even under the unclean threshold
    (measured, n = 160 and 900: the last poison left the rest clean under the search seeds and
    4.3x and 1.5x the clean-only error over 32 evaluation seeds; with it flagged, 5 of 5 and
    36 of 36). Only the weaker candidates that show it may join in :func:`_judge`."""
    if core.mechanism is None:
        return flagged
    shown = [int(i) for i in tested if core.alone[i] and core.shows(int(i)) and core.harm[:, i].mean() > MIN_EFFECT]
    details["without_mechanism"] = [i for i in flagged if not core.poison_like(i)]
    return sorted({i for i in flagged if core.poison_like(i)} | set(shown))


def _scores(core: _Core, flagged: list[int]) -> np.ndarray:
    """Each example's least harm over the seeds (the lowest where untested), ties broken by
    the screen, the flagged first."""
    low = np.fmin.reduce(core.harm, axis=0)                                 # (n,) least harm over seeds
    scores = np.where(np.isnan(low), np.nanmin(low) if np.isfinite(low).any() else 0.0, low)
    scores = scores + 1e-6 * rank01(screen_scores(core.context))           # tie-break by the screen
    scores[flagged] += 1.0 + max(float(np.nanmax(scores)), 0.0)            # flagged rank first
    return scores


def controls_and_pool(context: Context, beyond: np.ndarray, reached: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The controls and the pool the cores are drawn from: a seeded permutation of the
    examples ``beyond`` the reach of the order the search follows that are not among the
    combined order's ``reached`` ones (all of ``beyond`` where that leaves fewer than
    ``CORE_SIZE + CONTROLS``), in index order before the permutation; its first ``CONTROLS``
    (at most half) are the controls."""
    outside = np.setdiff1d(beyond, reached)                                 # (sorted)
    if len(outside) < CORE_SIZE + CONTROLS:
        outside = np.sort(beyond)
    rest = np.random.default_rng(context.seed).permutation(outside)
    controls = [int(i) for i in rest[:min(CONTROLS, len(rest) // 2)]]
    return controls, rest[len(controls):]


def draw_core(context: Context, pool: np.ndarray, d: int) -> np.ndarray:
    """Core number d: a seeded random sample of ``CORE_SIZE`` examples of the pool, as a mask (n,)."""
    return mask_with(np.zeros(context.n, bool), np.random.default_rng([context.seed, d]).permutation(pool)[:CORE_SIZE])


def core_reference(oracle: Oracle, context: Context, seeds: list[int], core: np.ndarray,
                   controls: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The error a test on ``core`` is measured against, (S,), and the controls' harms
    (S, n; NaN elsewhere): the median over the controls of the error of the core with one
    control added (the core's own error when there are no controls). The median, not the
    bare core, because a core may sit in a lucky mode of the training that most single
    additions leave (measured: 6 of 8 random clean additions raised one core's error 4x
    alike)."""
    core_error = errors_of(oracle, [core], context, seeds=seeds)[0]                  # (S,)
    harm = np.full((len(seeds), context.n), np.nan)                         # log error ratios (S, n)
    if not controls:
        return core_error, harm
    _test(oracle, seeds, core, core_error, [[i] for i in controls], harm, np.full(len(seeds), np.inf))
    shift = np.median(harm[:, controls], axis=1)                            # (S,)
    harm[:, controls] -= shift[:, None]
    return core_error * np.exp(shift), harm


def _least_to_remove(oracle: Oracle, context: Context, strong: list[int], weaker: Callable[[], list[int]],
                     limit: float, band: float, pool: np.ndarray, details: dict) -> tuple[list[int], int, bool]:
    """The flagged set: ``strong`` and, if the rest is not clean without it (error above
    ``limit`` under some search seed), weaker examples, provided that removing all of
    ``weaker()`` lowers the rest's error more than removing as many random examples of
    ``pool`` does (the median of ``NULL_DRAWS`` draws) by the factor e^``band``, the width
    of the clean band, in the geometric mean over the search seeds (measured on the suite:
    weaker candidates that held 1 and 2 poisons of 7 and 12 examples lowered it 1.34-1.41x
    beyond the random removals, their bands being 1.50x and 1.61x; ones that held 6 poisons
    of 7, 2.1x and 3.0x, band 1.44x). The mean, not every seed, because the training's error
    is bimodal: on a `decoys` set (n = 1000, seed 110) removing 4 weaker candidates, 3 of
    them poisons, lowered it 4.0x beyond random removals under one seed and 1.28x under the
    other. The random removals are the null because the clean level is an
    estimate from the prefix search, the lowest error of several removals, and measured
    below the error of the clean examples alone (five sets of the suite: 0.02-0.15 against
    0.04-0.34), so a rest above it need not hold harm. Of the weaker ones, the fewest
    leading ones whose removal leaves the rest clean and does as well, within
    ``MIN_EFFECT``, as removing all of them (bisection, assuming that removing more harmful
    examples does not raise the error); all of them if even that leaves the rest unclean.
    Returns the flagged set, how many weaker ones it holds and whether the rest is clean."""
    n = context.n
    rest: dict[int, np.ndarray] = {}                                        # m -> rest errors (seeds,)
    extra: list[int] = []

    def error(m: int) -> np.ndarray:
        rest[m] = errors_of(oracle, [mask_without(n, strong + extra[:m])], context)[0]
        return rest[m]

    if (error(0) <= limit).all():
        details["rest_error"] = float(rest[0].max())
        return sorted(strong), 0, True
    extra = weaker()
    m = len(extra)
    if not m:
        details["rest_error"] = float(rest[0].max())
        return sorted(strong), 0, False
    draws = [np.random.default_rng([context.seed, 3, d]).choice(pool, size=min(m, len(pool)), replace=False)
             for d in range(NULL_DRAWS)]
    null = np.median(errors_of(oracle, [mask_without(n, strong + list(d)) for d in draws], context), axis=0)
    details["weaker_vs_random"] = {"without_weaker": error(m).tolist(), "without_random": null.tolist()}
    if not np.log(null / rest[m]).mean() > band:                             # no harm beyond a random removal
        details["rest_error"] = float(rest[0].max())
        return sorted(strong), 0, False
    if not (rest[m] <= limit).all():                                        # not even all of them
        details["rest_error"] = float(rest[m].max())
        return sorted(strong + extra), m, False
    target = np.minimum(limit, rest[m] * math.exp(MIN_EFFECT))              # (seeds,)
    hi = first_passing(0, m, lambda a: bool((error(a) <= target).all()))  # above target at 0, not at m
    details["rest_error"] = float(rest[hi].max())
    return sorted(strong + extra[:hi]), hi, True


def _test(oracle: Oracle, seeds: list[int], core: np.ndarray, core_error: np.ndarray, groups: list[list[int]],
          harm: np.ndarray, tau: np.ndarray, alone: np.ndarray | None = None,
          reserve: int | None = None, *, rise: np.ndarray | None = None,
          mechanism: tuple[str, np.ndarray, np.ndarray] | None = None) -> list[list[int]]:
    """Add each group to the core under each seed; split groups harmful under any seed (h >
    ``tau``) in halves until single examples; write each example's harm (S, n) (its group's
    while it was not tested alone) and mark in ``alone`` (n,) the examples tested alone.

    With a ``mechanism`` (the statistic's name, centre (S,), band (S,)), each example's
    ``rise`` (S, n) of the statistic over the centre is written alike, and only groups that also raised it
    past the band under some seed are split or left whole: a group without the poisons'
    mechanism holds none of them. With a ``reserve``, splits stop where they would leave
    fewer than ``reserve`` trials of the search budget, the most harmful groups (by their
    largest harm over the seeds) split first. Returns the groups of more than one example
    left whole."""
    whole = []
    while groups:
        outs = oracle.ask([Trial(mask_with(core, g), s) for g in groups for s in seeds])
        split = []
        for i, g in enumerate(groups):
            own = outs[i * len(seeds):(i + 1) * len(seeds)]
            h = np.array([log_error(o) for o in own]) - np.log(core_error)
            harm[:, g] = h[:, None]
            if alone is not None and len(g) == 1:
                alone[g] = True
            if mechanism is not None:
                r = np.array([o.extra(mechanism[0]) for o in own]) - mechanism[1]
                rise[:, g] = r[:, None]
                if not (r > mechanism[2]).any():
                    continue
            if len(g) > 1 and (h > tau).any():
                split.append((-float(h.max()), g))
            elif len(g) > 1:
                whole.append(g)
        split.sort(key=lambda t: t[0])
        room = len(split)
        if reserve is not None:
            room = max((oracle.left - reserve) // (2 * len(seeds)), 0)
        whole += [g for _, g in split[room:]]
        groups = [half for _, g in split[:room] for half in (g[:len(g) // 2], g[len(g) // 2:])]
    return whole
