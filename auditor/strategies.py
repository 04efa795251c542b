"""Which subsets to retrain next, and the verdict: pure functions of the outcomes so far.

A strategy is written as plain sequential code that asks an oracle for the outcomes of
batches of trials. The oracle answers from the outcomes stored so far and, at the first
batch it cannot answer, stops the strategy by raising :class:`NeedTrials`. :func:`plan`
turns that into the pure function the audit loop calls:

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
Every strategy ends with the confirmation round of :func:`confirm`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats

from auditor.search.confirm import MIN_EFFECT, MIN_RANK_RISE, confirm
from auditor.search.confirm import log_error as _log_error
from auditor.search.gate import harm_gate
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
    confirm_seeds : int, seeds of the confirmation round (up to twice as many, see :func:`confirm`)
    search_seeds : int, seeds every search decision is checked under
    screen : ndarray (n,) or None, suspicion scores that order the search
    alpha : float, significance level of the harm gate and the confirmation
    mechanism : str or None, the name of the outcomes' extra that measures the implicit bias
        the poisons distort (``effective_rank`` of the SSM students' A); the strategies then
        flag only examples that raise it (:func:`_rank_band`), and a verdict also needs
        removing the flagged set to lower it (:func:`confirm`)
    """

    n: int
    seed: int = 0
    budget: int = 10_000
    confirm_seeds: int = 4
    search_seeds: int = 2
    screen: np.ndarray | None = None
    alpha: float = ALPHA
    mechanism: str | None = None


@dataclass
class Verdict:
    """The strategy's answer.

    Attributes
    ----------
    flagged : sorted list of example indices judged harmful (empty if not confirmed)
    scores : ndarray (n,), higher = more harmful
    confirmation : dict, the statistics of :func:`confirm`
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


# --------------------------------------------------------------------------- helpers


def _order(context: Context) -> np.ndarray:
    """Examples from most to least suspicious (a seeded shuffle without a screen)."""
    if context.screen is None:
        return np.random.default_rng(context.seed).permutation(context.n)
    return np.argsort(-np.asarray(context.screen), kind="stable")


# --------------------------------------------------------------------------- group testing


CLEAN_SHARE = 1 / 3      # a set is clean while its log error lies within this share of the way
                         # from the clean level to the harmed one (the seed-to-seed noise of a
                         # clean model's error is itself up to ~2x on these problems)
BASE_SHARE = 1 / 6       # stricter for the clean base: removing too much there only costs
                         # trials (step 3 puts the harmless back), removing too little costs recall


def _clean_limit(clean: np.ndarray | float, harmed: float, share: float = CLEAN_SHARE) -> np.ndarray | float:
    return clean * (harmed / clean) ** share


def group_testing(context: Context, oracle: Oracle) -> Verdict:
    """Find the smallest set whose removal restores generalization, by group tests.

    Measured facts behind it: harm grows with the poisons' total energy, not their count;
    removing some of the poisons helps little, one strong poison alone can ruin
    generalization, and a weak one only hurts together with others. So:

    1. *Clean base.* Remove growing prefixes of the screen order (most suspicious first),
       stop unless the harm gate opens (:func:`auditor.search.gate.harm_gate`), and take the
       smallest prefix whose removal brings the error near the best level seen
       (``BASE_SHARE``): base B = everything else, R = the removed.
    2. *Individual harm.* Add each example of R (or small groups of them, when the budget
       is short) back to B alone: h = log error(B + group) - log reference, averaged over
       the search seeds, where the reference is the median error of B without one of
       ``CONTROLS`` random examples of B: the typical error of the base perturbed by one
       example, not the base's own, which the prefix search picked for being low and
       which may sit in a lucky or unlucky mode of the training.
    3. *Joint harm.* Add back the least harmful examples of R in growing amounts; the
       largest part that keeps the error near the reference (``CLEAN_SHARE``) goes back.
       The rest is flagged: the examples whose joint presence does the harm. Where the
       reference lies more than ``MIN_EFFECT`` above the base under every seed (the base
       sits in a luckier mode than its perturbations), so is, and for good, every example
       (group) whose harm in step 2 exceeded, under every seed, both ``MIN_EFFECT`` and
       the control band (how far above the reference any control moved the base): there
       the clean limit, anchored at the reference, lets a weak poison back with the
       harmless (measured on a set of n = 90: base 0.011, reference 0.068, a poison at
       +1.09 and +0.40 in log error against a band of 0.18 went back at a joint error of
       0.073), and so may step 4 (n = 80, reference 1.7x the base: a poison at +2.0 and
       +0.92, put back in step 3, would go back under control harms of 0.26 and 0.25).
       With that poison back, the two sets' errors ended 4.8x and 1.9x the clean
       examples' own. Where the reference is level with the base, the joint rule is as
       strict as meant, and the clean examples that pass the band (the removed are the
       screen's most suspicious, the controls typical) are left to it (measured on four
       such sets, n = 60-140: 7 clean examples would have been settled, and no poison
       that the joint rule did not flag anyway).
    4. *Prune.* Add each other flagged example back alone to the cleaned set; of those
       that leave it clean and do no more harm than random clean examples do, as many as
       keep it clean together, least harmful first, are unflagged (:func:`_prune`).
    5. Confirm over fresh seeds (:func:`confirm`).

    Where the outcomes' effective rank measures the implicit bias (the SSM students), steps
    3 and 4, which judge membership by the error alone, give way to the poisons' mechanism:
    the flagged are the examples of R whose group, added to B in step 2, raised the rank
    beyond what every perturbation of B did (:func:`_rank_band`), groups that did being split
    in halves while the budget lasts (one left whole is flagged whole). The harm of R as a
    whole is what step 1 found and what step 5 tests. Measured on small sets: a poison that
    the joint rule put back (its error harm +1.23 and -0.34 under the two seeds, its rank
    rise 0.96 and 1.11) left the error 2.5x the clean examples' own, and pairs of examples
    flagged each poison's clean partner with it (n = 140: precision 0.64, now 1.0).

    Every decision is measured on retrained models, and a set counts as clean only
    if it is clean under each of the ``search_seeds`` seeds (the training dynamics are
    sensitive to the start). The screen only orders step 1.
    """
    n = context.n
    order = _order(context)
    # (1) prefix search: doubling sizes, then a finer pass below the first clean size
    full, errors, best, details = _prefix_search(context, oracle, order)
    if "reason" in details:                                                 # nothing to search for
        return _finish([], _screen_scores(context), context, oracle, details)
    clean_level = max(_clean_limit(best, float(full.min()), BASE_SHARE), best)   # (the gate tested fresh seeds)
    s_clean = min(s for s, e in errors.items() if e.max() <= clean_level)
    lo = s_clean // 2
    fine = _between(lo, s_clean, 7)
    errors.update(zip(fine, _errors(oracle, [_without(n, order[:s]) for s in fine], context)))
    s_clean = min(s for s, e in errors.items() if e.max() <= clean_level and s >= lo)
    removed = order[:s_clean]
    base_mask = _without(n, removed)
    base = errors[s_clean]                                                      # (seeds,)
    details.update(clean_base_size=int(base_mask.sum()), removed=int(s_clean), base_error=float(base.max()))

    # (2) individual harm of the removed examples, measured against the typical error of the
    # base perturbed by one example (measured on the digits benchmark, seed 0: the median
    # addition raised the base's error e^1.9-fold under one seed and lowered it e^1.4-fold
    # under the other, the median control removal alike: e^1.9 and e^1.5), in groups as small
    # as the budget allows. The mean over the seeds orders step 3: where one example moves the
    # error e^2-fold either way under one seed (a deep classifier's target loss), the worst
    # seed ranks clean examples among the poisons (digits, seed 0, 256 removed: the 30 most
    # harmful by the worst seed held 14 of the 30 poisons, the last at rank 117; by the mean 27,
    # the last at rank 45)
    k = context.search_seeds
    moved = _without_controls(oracle, context, base_mask, stream=2)
    reference = np.median(moved, axis=0) if moved else base                  # (seeds,)
    room = max(oracle.left // k - 20, 1)
    groups = np.array_split(removed, min(room, len(removed)))
    added = np.log(np.array(_errors(oracle, [_with(base_mask, g) for g in groups], context)) / reference)
    # the control band: how far above the reference one perturbation of the base moves it
    band = np.maximum(np.max([np.log(e / reference) for e in moved], axis=0, initial=0.0), MIN_EFFECT)  # (seeds,)
    loose = bool((reference > base * math.exp(MIN_EFFECT)).all())             # the base sits in a luckier mode
    harm, settled = np.zeros(n), np.zeros(n, bool)                          # settled: flagged for good
    for g, h in zip(groups, added):                                         # h: (seeds,)
        harm[g] = float(h.mean())
        settled[g] = bool((h > band).all()) and loose
    details.update(group_size=int(max(len(g) for g in groups)), reference_error=reference.tolist(),
                   control_band=band.tolist(), settled=int(settled.sum()))

    if context.mechanism is not None:
        # (3') where the rank measures the implicit bias, the poisons among the removed are the
        # examples whose group, added to the base, raised it beyond every perturbation of the base
        # (trained already); the harm of the removed together is what the prefix search found and
        # what the confirmation tests, so steps 3 and 4, which judge by the error alone, are not run
        centre, rank_band = _rank_band(_without_controls(oracle, context, base_mask, stream=2, rank=True))

        def raised(gs: list) -> list:
            """The groups of ``gs`` whose addition to the base raised the rank past the band."""
            ranks = _errors(oracle, [_with(base_mask, g) for g in gs], context, rank=True)
            return [list(g) for g, r in zip(gs, ranks) if (r - centre > rank_band).all()]

        pending, flagged = raised(groups), []
        while pending:                      # split the groups that raised it, in halves, while the budget lasts
            g = pending.pop(0)
            if len(g) == 1:
                flagged += g
                continue
            try:
                pending += raised([g[:len(g) // 2], g[len(g) // 2:]])
            except BudgetExhausted:         # a group the budget leaves whole is flagged whole
                details["budget"] = "exhausted while splitting: groups left whole are flagged whole"
                flagged += g
        flagged = sorted(int(i) for i in flagged)
        details["without_mechanism"] = [int(i) for i in np.sort(removed)
                                        if i not in flagged and harm[i] > MIN_EFFECT]
    else:
        # (3) add back the least harmful in growing amounts while the joint error stays clean; where
        # the base is luckier than the reference, what did harm beyond the control band under every
        # seed stays flagged whatever the joint error, and the prune (4) does not put it back
        back_order = removed[np.lexsort((_screen_scores(context)[removed], harm[removed]))]
        amounts = _between(0, len(removed), 12)
        joint = dict(zip(amounts, _errors(oracle, [_with(base_mask, back_order[:a]) for a in amounts], context)))

        limit = _clean_limit(reference, float(full.min()))                       # (seeds,)

        def clean(a: int) -> bool:
            return bool((joint[a] <= limit).all())

        keep = max((a for a in amounts if clean(a)), default=0)
        nxt = min((a for a in amounts if a > keep), default=keep)
        fine = _between(keep, nxt, 7)
        joint.update(zip(fine, _errors(oracle, [_with(base_mask, back_order[:a]) for a in fine], context)))
        keep = max((a for a in joint if clean(a) and a <= nxt), default=0)
        flagged = sorted({int(i) for i in back_order[keep:]} | {int(i) for i in np.flatnonzero(settled)})
        details.update(put_back=int(keep), joint_errors={int(a): float(e.max()) for a, e in sorted(joint.items())})

        # (4) prune: a flagged example that leaves the cleaned set clean when added back alone, and
        # together with the others put back, was flagged only because of where it stood in the order
        try:
            flagged = _prune(oracle, context, flagged, full, details, settled=settled)
        except BudgetExhausted:
            details["prune"] = "skipped: budget exhausted"
    scores = harm + 1e-6 * _rank01(_screen_scores(context))                # tie-break by the screen
    scores[flagged] += 1.0 + max(harm.max(), 0.0)                            # flagged rank first
    return _finish(flagged, scores, context, oracle, details)


def _without_controls(oracle: Oracle, context: Context, mask: np.ndarray, stream: int,
                      *, rank: bool = False) -> list[np.ndarray]:
    """Errors (or effective ranks) of the set ``mask`` without each of ``CONTROLS`` random
    examples of it (fewer when it holds fewer than CONTROLS + 1), drawn from the seeded
    ``stream``: list of (seeds,)."""
    kept = np.flatnonzero(mask)
    controls = np.random.default_rng([context.seed, stream]).choice(kept, size=min(CONTROLS, len(kept) - 1),
                                                                     replace=False)
    return _errors(oracle, [mask & (np.arange(context.n) != c) for c in controls], context, rank=rank)


def _prefix_search(context: Context, oracle: Oracle,
                   order: np.ndarray) -> tuple[np.ndarray, dict, float, dict]:
    """Errors with all data (seeds,) and without each doubling prefix of ``order`` and its
    first half ({size: (seeds,)}), the best prefix error, and the details;
    ``details["reason"]`` is set when the harm gate (:func:`auditor.search.gate.harm_gate`)
    finds no prefix whose removal beats random removals of its size (nothing to search for).
    The half is searched too because a screen may rank the poisons anywhere in it (measured:
    poisons with their energy on the last position, which the gamma0 screens do not see, all
    lay in the first 225 of 450, 3 beyond the first 128)."""
    n = context.n
    full = _errors(oracle, [np.ones(n, bool)], context)[0]
    sizes = sorted({2 ** i for i in range(int(math.log2(max(n // 2, 1))) + 1)} | {max(n // 2, 1)})
    errors = dict(zip(sizes, _errors(oracle, [_without(n, order[:s]) for s in sizes], context)))
    best = min(e.max() for e in errors.values())
    gate = harm_gate(context, oracle, order, errors)
    details = {"full_error": float(full.max()),
               "prefix_errors": {int(s): float(e.max()) for s, e in errors.items()}, "gate": gate}
    if not gate["open"]:
        details["reason"] = (f"removing the screen's {gate['size']} most suspicious examples did not lower the error "
                             f"by more than 20%, both against all data and against removing as many random "
                             f"examples, at level {context.alpha:g} over {len(gate['seeds'])} fresh seeds "
                             f"(p = {gate['p_value']:.3g} and {gate['p_value_vs_random']:.3g})")
    return full, errors, best, details


def _errors(oracle: Oracle, masks: list[np.ndarray], context: Context,
            seeds: list[int] | None = None, *, rank: bool = False) -> list[np.ndarray]:
    """Errors (or, with ``rank``, the effective ranks) of models trained on each mask under
    each seed (default: the search seeds): list of (seeds,)."""
    seeds = seeds or [context.seed + j for j in range(context.search_seeds)]
    outs = oracle.ask([Trial(m, s) for m in masks for s in seeds])
    k = len(seeds)
    values = [o.extra(context.mechanism) if rank else max(o.error, 1e-12) for o in outs]
    return [np.array(values[i * k:(i + 1) * k]) for i in range(len(masks))]


def _gmean(errors: np.ndarray) -> float:
    return float(np.exp(np.log(errors).mean()))


def _without(n: int, removed) -> np.ndarray:
    mask = np.ones(n, bool)
    mask[np.asarray(removed, dtype=int)] = False
    return mask


def _with(base_mask: np.ndarray, added) -> np.ndarray:
    mask = base_mask.copy()
    mask[np.asarray(added, dtype=int)] = True
    return mask


def _prune(oracle: Oracle, context: Context, flagged: list[int], full: np.ndarray, details: dict,
           *, settled: np.ndarray | None = None) -> list[int]:
    """Unflag what the cleaned set takes back. Each flagged example that is not ``settled``
    (n,) is added back alone to the cleaned set (everything but the flagged); one that
    leaves it clean and does no more harm, under every seed, than the most harmful of
    ``CONTROLS`` random examples of the cleaned set does (h_c = log error(cleaned) - log
    error(cleaned - c)) may go back. They go back together, least harmful (worst over the
    seeds) first, as many as keep the cleaned set clean (bisection, assuming that adding
    more of them does not lower the error). Without the rest of the poisons an example's
    own harm shows far more clearly than in step 2, where most of them were still in; the
    controls keep a weak poison, which the clean rule alone lets back, flagged where clean
    examples barely move the error (common random numbers), and let clean examples back
    where they move it a lot (measured: a deep classifier's target loss, up to e^2-fold)."""
    if not flagged:
        return flagged
    n = context.n
    cleaned = _without(n, flagged)
    base = _errors(oracle, [cleaned], context)[0]                             # (seeds,)
    without = _without_controls(oracle, context, cleaned, stream=1)
    null = np.max([np.log(base / e) for e in without], axis=0, initial=0.0)  # (seeds,)
    limit = _clean_limit(base, float(full.min()))
    unsettled = [i for i in flagged if settled is None or not settled[i]]
    alone = dict(zip(unsettled, _errors(oracle, [_with(cleaned, [i]) for i in unsettled], context)))
    harm = {i: np.log(e / base) for i, e in alone.items()}                  # (seeds,) each
    harmless = sorted((i for i in unsettled if (alone[i] <= limit).all() and (harm[i] <= null).all()),
                      key=lambda i: (float(harm[i].max()), i))
    joint: dict[int, float] = {}

    def clean(a: int) -> bool:
        e = _errors(oracle, [_with(cleaned, harmless[:a])], context)[0]
        joint[a] = float(e.max())
        return bool((e <= limit).all())

    back = 0                                                                # the cleaned set itself is clean
    if harmless:
        m = len(harmless)
        back = m if clean(m) else _first_passing(0, m, lambda a: not clean(a)) - 1
    details["prune"] = {"candidates": len(harmless), "put_back": back, "control_harm": null.tolist(),
                        "joint_errors": dict(sorted(joint.items()))}
    return sorted(set(flagged) - set(harmless[:back]))


def _rank_band(controls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What an addition's effective rank is judged by: the centre (S,), the median of the
    ``controls``' ranks (each (S,): the set moved by one random example), and the band (S,),
    the farthest any control lies from it, at least ``MIN_RANK_RISE``. An example shows the
    poisons' mechanism where its addition lifts the rank above the centre by more than the band.

    Clean-label poisons of an SSM raise all entries of A together: one of them, added to a
    core or a clean base, raises the effective rank of its model from about 7 by one or more
    (measured over the audits of 59 generated sets, n = 40-1000, the poisons' energy at k,
    k-1 or k-2: of 815 tests of a poison, 99.8% rose by more than 0.1, median 1.8, poisons
    that barely moved the error included; of 1986 tests of a clean example, 3.4%, median
    0.004, the large-label tail that the error search flags among them; controls moved it
    by at most 0.06)."""
    moved = np.array(controls)                                              # (C, S)
    centre = np.median(moved, axis=0)
    return centre, np.maximum(np.abs(moved - centre).max(axis=0), MIN_RANK_RISE)


def _first_passing(lo: int, hi: int, passes: Callable[[int], bool]) -> int:
    """The least a in (lo, hi] with ``passes(a)``, by bisection, for a test known to fail at
    ``lo`` and pass at ``hi`` that, once passed, passes for every larger a."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def _between(lo: int, hi: int, count: int) -> list[int]:
    """Up to ``count`` distinct integers spread over [lo, hi], both ends included."""
    return sorted({lo + round((hi - lo) * i / max(count - 1, 1)) for i in range(count)})


# --------------------------------------------------------------------------- tests on a small core


CORE_SIZE = 64           # examples in the small core that one example is added to when tested
CONTROLS = 8             # examples drawn like the core and tested like candidates: the null
CORE_DRAWS = 3           # cores drawn at most, until one that every control leaves clean
# MIN_EFFECT, the least harm a test counts (20%), and MIN_RANK_RISE live in auditor.search.confirm
CLEAN_RATIO = math.log(1.5)  # errors within 1.5x of each other are equally clean (the product's criterion)
NULL_DRAWS = 3           # random removals the weaker candidates' joint removal is compared with
CHUNK = 32               # candidates tested one by one per round at the top of the screen order
DENSE = (3 - math.sqrt(5)) / 2   # share of harmful examples from which no group test beats testing
                                 # each example alone (Ungar, 1960: p >= 0.382)


def core_testing(context: Context, oracle: Oracle) -> Verdict:
    """Find the examples that measurably harm generalization, by tests on a small clean core.

    Measured facts behind it: one poison among hundreds of examples may do no visible harm
    on its own, while a few together ruin generalization; a poison's push on the training
    dynamics grows with its share of the training set; and under common random numbers
    (the same seed) adding one clean example to a set barely moves the trained model's
    error. So an example is tested where its effect is large and the noise small:

    1. *Where the harm is.* Remove growing prefixes of the screen order (most suspicious
       first), and stop unless the harm gate opens (:func:`auditor.search.gate.harm_gate`);
       the knee is the smallest prefix that undoes at least half of the harm (in log
       error). The first candidates are the first twice-the-knee examples of the order: the
       margin holds weaker poisons that the screen ranks later.
    2. *A small core and controls,* drawn at random from beyond every candidate the search
       may reach: ``CONTROLS`` examples, and ``CORE_SIZE`` examples so that one added
       example holds a large share of the core's training set. A core on which a control
       does harm is fragile; up to ``CORE_DRAWS`` cores are drawn until one is not.
    3. *Tests.* Each control and each candidate is added to the core alone (candidates
       in small groups, split in halves while harmful, when the budget is short): harm
       h = log error(core + group) - log error(reference), under each search seed when
       the budget has room (else the first); the reference is the median error of the
       core with one control added (:func:`_reference`). A candidate is flagged if, tested
       alone, under every seed, the core with it is no longer clean (its log error lies
       more than ``CLEAN_SHARE`` of the way from the clean level to the full set's error,
       the rule that judges every set clean) and it does more harm than every control.
       The clean level is the reference's error or, where a core sits below it, the lowest
       error of the prefix search (measured on a set of n = 500: a core at 0.0084, whose
       own third of the way ended at 0.039, took 17 clean examples that each raised its
       error 4.7-fold or more, while the clean examples alone had 0.09 over 32 seeds).
       Groups past that threshold are split first, the most harmful first, then those
       past the level of the weaker candidates (step 4); a group the budget leaves whole
       is not flagged (measured: groups of five clean examples moved a core's error up to
       e^1.9-fold, beyond the threshold, where one control moved it at most e^0.02-fold).
       The top of the order is tested one example at a time, ``CHUNK`` at a time, for as
       long as at least ``DENSE`` of the last chunk did harm past the threshold: where harm
       is that dense, groups are nearly all harmful and splitting them costs more than
       single tests (measured: 80 poisons in 1000, half of the order's first 152, as when
       one screen ranks them first and the others interleave their own picks; groups of
       six ran out of trials and nothing was flagged, one by one all 80 were, within 226
       trials).
    4. *Joint check.* Retrain on everything but the flagged set. If its error is not back
       near the clean level (``BASE_SHARE`` of the way from the lowest error without a
       prefix to the full set's, as group testing's clean base), the weaker candidates
       may join: those that do more harm than every control and ``MIN_EFFECT``, in the
       mean over the seeds (the training's error is bimodal: a poison may leave the core
       in its good mode under one seed), and again on a second random core, if removing
       all of them beats removing as many random examples by more than that clean band,
       and by at least ``CLEAN_RATIO``, in the mean over the seeds too
       (:func:`_least_to_remove`; measured on a clean set, n = 200: nine clean examples
       whose joint removal lowered the error 1.45x beyond random removals, where the band
       was 1.26x, were flagged and confirmed). As few of them join, most harmful first,
       as leave the rest clean and do as well, within ``MIN_EFFECT``, as all of them
       (bisection). If the rest is still not clean, the candidates are doubled and step 3
       goes on with the new ones, while the budget lasts, past the core's ``reach`` too, over
       every example but the core and the controls: the screen orders the candidates, it
       does not cap them (a poison the screens rank last costs trials, not recall).
    5. *Mechanism* (where the outcomes' effective rank measures the implicit bias): a
       flagged example stays flagged only if it, or the smallest group it was tested in,
       raised the core's effective rank beyond what every control did under every seed
       (:func:`_rank_band`; no training); and a candidate tested alone that raised it so and
       did more harm than ``MIN_EFFECT`` in the mean over the seeds is flagged even under
       the unclean threshold (measured, n = 160 and 900: the last poison left the rest clean
       under the search seeds and 4.3x and 1.5x the clean-only error over 32 evaluation
       seeds; with it flagged, 5 of 5 and 36 of 36). The tests of step 3 already split only the groups
       that raised it under some seed, and only their members may join as weaker
       candidates: a group without the mechanism holds no poison, and splitting it spends
       the budget on clean examples (measured on a set of n = 1000 with 50 poisons: budget
       exhausted with a poison in a group left whole, and the 6 clean examples flagged
       beside the others, unflagged for want of the mechanism, put their harm back: 1.68x
       the clean-only error; with the rank guiding the splits, 49 of 50 and 1.04x).
    6. Confirm over fresh seeds (:func:`confirm`).

    Every decision is measured on retrained models; the screen only orders the search
    (which examples are candidates, which form the core).
    """
    n = context.n
    order = _order(context)
    # (1) prefix search: doubling sizes; the knee undoes half the harm
    full, errors, best, details = _prefix_search(context, oracle, order)
    if "reason" in details:                                                 # nothing to search for
        return _finish([], _screen_scores(context), context, oracle, details)
    half = max(math.sqrt(best * float(full.min())), best)                  # (the gate tested fresh seeds)
    knee = min(s for s, e in errors.items() if e.max() <= half)
    details["knee"] = int(knee)

    # (2) the controls and the core: seeded random samples of the examples beyond every
    # candidate the search may reach (twice the first candidates); random, so that they are
    # typical (the screen's least suspicious tail holds the smallest, least informative
    # sequences, on which a model does not learn to extrapolate); drawn from the indices, not
    # the screen's order, so that a reordering beyond ``reach`` draws the same core (measured
    # on a clean set, n = 300: screens that differed only in their checkpoints' spacing drew
    # another core from the same 292 examples, and that core's audit flagged 5 examples)
    reach = min(4 * knee, n // 2)                                           # at least half the set stays out
    rest = np.random.default_rng(context.seed).permutation(np.sort(order[reach:]))
    controls = [int(i) for i in rest[:min(CONTROLS, len(rest) // 2)]]
    pool = rest[len(controls):]
    # every test runs under each search seed when the budget has room for testing all the
    # candidates the search may reach that way (on one core), else under the first
    k = context.search_seeds
    seeds = [context.seed + j for j in range(k if k * (2 + len(controls) + reach) <= oracle.left else 1)]

    # a candidate is harmful if the core with it is not clean (its log error lies more than
    # CLEAN_SHARE of the way from the clean level, the reference's or the best prefix's if
    # higher, to the full set's) and it does more harm than every control. A core that a
    # control already leaves unclean is fragile (it sits where any addition tips the training
    # into a worse mode): up to CORE_DRAWS cores are drawn, and the first that every control
    # leaves clean is kept (else the least fragile).
    def draw(d: int) -> np.ndarray:
        """Core number d: a seeded random sample of the pool, as a mask (n,)."""
        return _with(np.zeros(n, bool), np.random.default_rng([context.seed, d]).permutation(pool)[:CORE_SIZE])

    draws = []
    for d in range(CORE_DRAWS):
        core = draw(d)
        core_error, harm = _reference(oracle, context, seeds, core, controls)     # (S,), (S, n)
        anchor = np.maximum(core_error, best)                                  # (S,) the clean level
        unclean = np.maximum(np.log(_clean_limit(anchor, full[:len(seeds)]) / core_error), 0.0)  # (S,)
        excess = float((harm[:, controls].max(axis=1) - unclean).max()) if controls else -1.0
        draws.append((excess, d, core, core_error, harm, unclean))
        if excess < 0:
            break
    excess, d, core, core_error, harm, unclean = min(draws, key=lambda t: (t[0], t[1]))
    null = harm[:, controls]                                                # (S, controls)
    tau = np.maximum(unclean, null.max(axis=1)) if controls else unclean    # (S,)
    details.update(core_size=int(core.sum()), core_error=float(core_error.max()), core_draws=len(draws),
                   test_seeds=len(seeds), control_harms=np.round(null, 4).tolist(), threshold=tau.tolist())

    # the candidates, in screen order: every example but the core and the controls (the first
    # ``reach`` of the order hold neither). Beyond ``reach`` the search goes on, doubling, while
    # the rest is not clean and the budget lasts: the screen orders the search, it never caps it
    drawn = core.copy()
    drawn[controls] = True
    candidates = order[~drawn[order]]

    def replicate(weaker: list[int]) -> list[int]:
        """The weaker candidates whose harm replicates on a second random core (on small
        sets it shares most of the first's examples), under the last search seed: more
        than every control's there and ``MIN_EFFECT``; most harmful first (least harm
        over both cores)."""
        seed = [context.seed + k - 1]
        second = draw(CORE_DRAWS)
        second_error, again = _reference(oracle, context, seed, second, controls)
        _test(oracle, seed, second, second_error, [[i] for i in weaker], again, np.full(1, np.inf))
        level = max(float(np.max(again[0, controls], initial=0.0)), MIN_EFFECT)
        kept = [i for i in weaker if again[0, i] > level]
        details.update(replicated=f"{len(kept)} of {len(weaker)}", second_core_error=float(second_error[0]))
        return sorted(kept, key=lambda i: -min(harm[:, i].min(), again[0, i]))

    # (3) + (4) test candidates in screen order; flag those past the threshold and, while
    # the rest is not clean without them, the fewest of the weaker ones that make it clean;
    # double the candidates while the rest is not clean
    weak = np.maximum(null.max(axis=1) if controls else 0.0, MIN_EFFECT)      # (S,)
    limit = _clean_limit(best, float(full.min()), BASE_SHARE)              # the clean base's level
    # the poisons' mechanism on the core (where the rank measures the implicit bias): how far an
    # addition raises the effective rank above the controls' median, against the controls' band
    rise = np.full((len(seeds), n), np.nan)                                 # (S, n)
    mechanism = None
    if context.mechanism is not None and controls:
        mechanism = (context.mechanism,
                     *_rank_band(_errors(oracle, [_with(core, [c]) for c in controls], context, seeds=seeds, rank=True)))

    def shows(i: int) -> bool:
        """Whether example i (or the smallest group it was tested in) raised the core's rank
        past the band under every seed (false where that was not measured)."""
        return bool((rise[:, i] > mechanism[2]).all())

    def poison_like(i: int) -> bool:
        """``shows(i)``, or true where there is no mechanism or it was not measured."""
        return mechanism is None or bool(np.isnan(rise[:, i]).all()) or shows(i)
    reserve = k * (2 + NULL_DRAWS + math.ceil(math.log2(reach + 1)))   # room kept for the joint checks
    alone = np.zeros(n, bool)                                               # tested alone on the core

    def past_tau(examples) -> np.ndarray:
        """Whether each of the ``examples`` did harm past the threshold under every seed."""
        return (harm[:, examples] > tau[:, None]).all(axis=0)

    def past_weak(g: list[int]) -> bool:
        """Whether the group g did more harm than the weaker candidates' level under some seed."""
        return bool((harm[:, g[0]] > weak).any())

    tested, size, flagged, dense, group = 0, min(2 * knee, reach), [], True, 1
    while True:
        try:
            while dense and tested < size:      # one by one, a chunk at a time, while the harm is dense
                stop = min(size, tested + CHUNK, tested + (oracle.left - reserve) // len(seeds))
                new = [int(i) for i in candidates[tested:stop]]
                if not new:
                    raise BudgetExhausted
                _test(oracle, seeds, core, core_error, [[i] for i in new], harm, tau, alone, rise=rise,
                      mechanism=mechanism)
                tested += len(new)
                dense = bool(past_tau(new).mean() >= DENSE)
            new = [int(i) for i in candidates[tested:size]]
            group = max(1, math.ceil(2 * len(new) * len(seeds) / max(oracle.left - reserve, 1)))
            # split toward the clearly harmful first, then toward the weaker ones
            whole = _test(oracle, seeds, core, core_error, [new[i:i + group] for i in range(0, len(new), group)],
                          harm, tau, alone, reserve, rise=rise, mechanism=mechanism)
            whole = _test(oracle, seeds, core, core_error, list(filter(past_weak, whole)), harm, weak, alone, reserve,
                          rise=rise, mechanism=mechanism)
            if any(map(past_weak, whole)):
                details["budget"] = ("exhausted while testing: harmful groups left whole are not flagged (an "
                                     "example is flagged on its own harm)")
        except BudgetExhausted:
            details["budget"] = "exhausted while testing: untested candidates are not flagged"
        tested = size
        clear = alone & past_tau(slice(None))                               # (n,) harmful on their own
        strong = [int(i) for i in candidates[:tested] if clear[i]]
        weaker = [int(i) for i in candidates[:tested]
                  if harm[:, i].mean() > weak.mean() and not clear[i] and poison_like(int(i))]
        try:
            flagged, used, clean = _least_to_remove(oracle, context, strong, lambda: replicate(weaker),
                                                    limit, max(math.log(limit / best), CLEAN_RATIO), pool, details)
        except BudgetExhausted:
            details.setdefault("budget", "exhausted during the joint check: only the clearly harmful are flagged")
            flagged, used, clean = sorted(strong), 0, False
        details.update(candidates=int(tested), group_size=group, weak_flagged=used)
        if clean or size >= len(candidates) or "budget" in details:
            break
        size = min(2 * size, len(candidates))

    if mechanism is not None:                                               # (5) the poisons' mechanism
        shown = [int(i) for i in candidates[:tested] if alone[i] and shows(int(i)) and harm[:, i].mean() > MIN_EFFECT]
        details["without_mechanism"] = [i for i in flagged if not poison_like(i)]
        flagged = sorted({i for i in flagged if poison_like(i)} | set(shown))
    low = np.fmin.reduce(harm, axis=0)                                      # (n,) least harm over seeds
    scores = np.where(np.isnan(low), np.nanmin(low) if np.isfinite(low).any() else 0.0, low)
    scores = scores + 1e-6 * _rank01(_screen_scores(context))                # tie-break by the screen
    scores[flagged] += 1.0 + max(float(np.nanmax(scores)), 0.0)            # flagged rank first
    return _finish(flagged, scores, context, oracle, details)


def _reference(oracle: Oracle, context: Context, seeds: list[int], core: np.ndarray,
               controls: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The error a test on ``core`` is measured against, (S,), and the controls' harms
    (S, n; NaN elsewhere): the median over the controls of the error of the core with one
    control added (the core's own error when there are no controls). The median, not the
    bare core, because a core may sit in a lucky mode of the training that most single
    additions leave (measured: 6 of 8 random clean additions raised one core's error 4x
    alike)."""
    core_error = _errors(oracle, [core], context, seeds=seeds)[0]                  # (S,)
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
        rest[m] = _errors(oracle, [_without(n, strong + extra[:m])], context)[0]
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
    null = np.median(_errors(oracle, [_without(n, strong + list(d)) for d in draws], context), axis=0)
    details["weaker_vs_random"] = {"without_weaker": error(m).tolist(), "without_random": null.tolist()}
    if not np.log(null / rest[m]).mean() > band:                             # no harm beyond a random removal
        details["rest_error"] = float(rest[0].max())
        return sorted(strong), 0, False
    if not (rest[m] <= limit).all():                                        # not even all of them
        details["rest_error"] = float(rest[m].max())
        return sorted(strong + extra), m, False
    target = np.minimum(limit, rest[m] * math.exp(MIN_EFFECT))              # (seeds,)
    hi = _first_passing(0, m, lambda a: bool((error(a) <= target).all()))  # above target at 0, not at m
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
        outs = oracle.ask([Trial(_with(core, g), s) for g in groups for s in seeds])
        split = []
        for i, g in enumerate(groups):
            own = outs[i * len(seeds):(i + 1) * len(seeds)]
            h = np.array([_log_error(o) for o in own]) - np.log(core_error)
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


# --------------------------------------------------------------------------- leave-one-out, Banzhaf


def leave_one_out(context: Context, oracle: Oracle) -> Verdict:
    """Remove each example alone; score = log error(all) - log error(all but i)."""
    n, seed = context.n, context.seed
    full = oracle.ask([Trial(np.ones(n, bool), seed)])[0]
    outs = oracle.ask([Trial.keep_all_but(n, [i], seed) for i in range(n)])
    scores = np.array([_log_error(full) - _log_error(o) for o in outs])
    return _finish(_outliers(scores), scores, context, oracle, {"full_error": full.error})


def banzhaf(context: Context, oracle: Oracle) -> Verdict:
    """Maximum-sample-reuse Banzhaf values over random half-subsets (Wang & Jia, 2023).

    Value of a subset = -log error; an example's Banzhaf value is the mean value of subsets
    with it minus the mean value of subsets without it; score = minus that value.
    """
    n, seed = context.n, context.seed
    m = max(8, min(context.budget, 2000))
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n)) < 0.5
    masks[~masks.any(1), 0] = True
    outs = oracle.ask([Trial(mask, seed) for mask in masks])
    value = -np.array([_log_error(o) for o in outs])                           # (m,)
    with_i = (masks * value[:, None]).sum(0) / np.maximum(masks.sum(0), 1)
    without_i = ((~masks) * value[:, None]).sum(0) / np.maximum((~masks).sum(0), 1)
    scores = without_i - with_i
    return _finish(_outliers(scores), scores, context, oracle, {"subsets": m})


def _outliers(scores: np.ndarray, *, z: float = 4.0) -> list[int]:
    """Examples whose score is a robust outlier above the rest (median + z * 1.4826 MAD)."""
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med)) + 1e-12
    return sorted(int(i) for i in np.flatnonzero((scores - med) / mad > z))


# --------------------------------------------------------------------------- confirmation


def _finish(flagged: list[int], scores: np.ndarray, context: Context, oracle: Oracle, details: dict) -> Verdict:
    confirmation = confirm(flagged, context, oracle)
    harm = (bool(flagged) and confirmation["effect_log_ratio"] > 0
            and max(confirmation["p_value"], confirmation["p_value_vs_random"]) < context.alpha)
    # where the rank measures the implicit bias, harm without the poisons' mechanism is not theirs
    confirmed = harm and (context.mechanism is None or confirmation["p_value_rank"] < context.alpha)
    confirmation.update(confirmed=confirmed, harm_confirmed=harm, rank_checked=context.mechanism is not None)
    if flagged and not confirmed:
        details["unconfirmed"] = flagged
        flagged = []
    return Verdict(flagged=flagged, scores=np.asarray(scores, float), confirmation=confirmation, details=details)


def _screen_scores(context: Context) -> np.ndarray:
    return np.zeros(context.n) if context.screen is None else np.asarray(context.screen, float)


def _rank01(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values) / max(len(values), 1)


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
    causes (see :func:`group_testing`).
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
