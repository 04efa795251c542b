"""What the strategies share: the search order, the clean rule, trials on masks, the prefix
search that begins the gated strategies, the controls, the rank band and the verdict's
confirmation (:func:`finish`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats

from auditor.search.confirm import MIN_RANK_RISE, confirm
from auditor.search.gate import harm_gate
from auditor.search.oracle import Context, Oracle, Verdict
from auditor.trials import Trial

CLEAN_SHARE = 1 / 3      # a set is clean while its log error lies within this share of the way
                         # from the clean level to the harmed one (the seed-to-seed noise of a
                         # clean model's error is itself up to ~2x on these problems)
BASE_SHARE = 1 / 6       # stricter for the clean base: removing too much there only costs
                         # trials (step 3 puts the harmless back), removing too little costs recall

CONTROLS = 8             # examples drawn like the core and tested like candidates: the null


def order_of(context: Context) -> np.ndarray:
    """Examples from most to least suspicious (a seeded shuffle without a screen)."""
    if context.screen is None:
        return np.random.default_rng(context.seed).permutation(context.n)
    return np.argsort(-np.asarray(context.screen), kind="stable")


def followed_order(context: Context, name: str) -> np.ndarray:
    """The order a strategy followed, by the name :func:`sharpest_order` gave it."""
    screens = dict(context.screens)
    return order_of(context) if name == "combined" else np.argsort(-np.asarray(screens[name], float), kind="stable")


def clean_limit(clean: np.ndarray | float, harmed: float, share: float = CLEAN_SHARE) -> np.ndarray | float:
    return clean * (harmed / clean) ** share


def errors_of(oracle: Oracle, masks: list[np.ndarray], context: Context,
              seeds: list[int] | None = None, *, rank: bool = False) -> list[np.ndarray]:
    """Errors (or, with ``rank``, the effective ranks) of models trained on each mask under
    each seed (default: the search seeds): list of (seeds,)."""
    seeds = seeds or [context.seed + j for j in range(context.search_seeds)]
    outs = oracle.ask([Trial(m, s) for m in masks for s in seeds])
    k = len(seeds)
    values = [o.extra(context.mechanism) if rank else max(o.error, 1e-12) for o in outs]
    return [np.array(values[i * k:(i + 1) * k]) for i in range(len(masks))]


def mask_without(n: int, removed) -> np.ndarray:
    mask = np.ones(n, bool)
    mask[np.asarray(removed, dtype=int)] = False
    return mask


def mask_with(base_mask: np.ndarray, added) -> np.ndarray:
    mask = base_mask.copy()
    mask[np.asarray(added, dtype=int)] = True
    return mask


def without_controls(oracle: Oracle, context: Context, mask: np.ndarray, stream: int,
                     *, rank: bool = False) -> list[np.ndarray]:
    """Errors (or effective ranks) of the set ``mask`` without each of ``CONTROLS`` random
    examples of it (fewer when it holds fewer than CONTROLS + 1), drawn from the seeded
    ``stream``: list of (seeds,)."""
    kept = np.flatnonzero(mask)
    controls = np.random.default_rng([context.seed, stream]).choice(kept, size=min(CONTROLS, len(kept) - 1),
                                                                     replace=False)
    return errors_of(oracle, [mask & (np.arange(context.n) != c) for c in controls], context, rank=rank)


def search_orders(context: Context) -> dict[str, np.ndarray]:
    """The orders the prefix search removes prefixes of: ``combined`` (:func:`order_of`) and,
    where several screens order the search, each screen's own (:func:`followed_order`).

    The screens' own orders are searched only where all the prefixes together take at most
    half the search budget: a budget the user set small leaves the rest of the search its
    trials, and searches the combined order alone (as every budget did before the screens'
    orders were added; the default budgets, at least 160, always hold them)."""
    names = [name for name, _ in context.screens] if len(context.screens) > 1 else []
    cost = context.search_seeds * (1 + sum(len(prefix_sizes(context.n, step=_step(name)))
                                           for name in ["combined", *names]))
    fits = 2 * cost <= context.budget
    return {"combined": order_of(context), **{name: followed_order(context, name) for name in names if fits}}


def _step(order: str) -> int:
    """How fast the prefixes of ``order`` grow (see :func:`prefix_search`)."""
    return 2 if order == "combined" else 4


def prefix_sizes(n: int, *, step: int) -> list[int]:
    """The prefix sizes searched: the powers of ``step`` (1 excluded where ``step`` > 2)
    below half the set, and half the set."""
    half = max(n // 2, 1)
    powers = [step ** i for i in range(0 if step == 2 else 1, int(math.log(half, step)) + 2)]
    return sorted({s for s in powers if s < half} | {half})


def knee_of(errors: dict[int, np.ndarray], level: float) -> int | None:
    """The least prefix size whose removal brings the error to ``level`` under every seed (None if none does)."""
    return min((s for s, e in errors.items() if e.max() <= level), default=None)


def prefix_search(context: Context, oracle: Oracle) -> tuple[np.ndarray, dict, dict, float, dict]:
    """Errors with all data (seeds,), the search orders ({name: (n,)}, :func:`search_orders`),
    the errors without their prefixes ({name: {size: (seeds,)}}), the best prefix error, and
    the details; ``details["reason"]`` is set when the harm gate
    (:func:`auditor.search.gate.harm_gate`) stays shut: removing the best prefix did not lower
    the error by the margin, against all data and against random removals of its size, on
    fresh seeds (nothing to search for).

    The combined order's prefixes double, and its first half is searched too, because a
    screen may rank the poisons anywhere in it (measured: poisons with their energy on the
    last position, which the gamma0 screens do not see, all lay in the first 225 of 450, 3
    beyond the first 128). Each screen's own prefixes grow fourfold (4, 16, 64, ... and the
    half; :func:`sharpest_order` refines them), because the combined order, each example's
    highest rank over the screens, dilutes one screen's picks with the others': on a set
    with label noise (n = 202, 11 poisons) gamma0 ranked all the poisons in its first 16,
    and removing them lowered the error 50-fold, where no prefix of the combined order
    (its first 32 held them all and 21 clean examples that the model needs) lowered it below
    0.7-fold, so a gate on the combined order alone stayed shut."""
    n = context.n
    full = errors_of(oracle, [np.ones(n, bool)], context)[0]
    orders = search_orders(context)
    sized = {name: prefix_sizes(n, step=_step(name)) for name in orders}
    pairs = [(name, s) for name in orders for s in sized[name]]
    measured = errors_of(oracle, [mask_without(n, orders[name][:s]) for name, s in pairs], context)
    errors: dict[str, dict[int, np.ndarray]] = {name: {} for name in orders}
    for (name, s), e in zip(pairs, measured):
        errors[name][s] = e
    best = min(e.max() for by_size in errors.values() for e in by_size.values())
    gate = harm_gate(context, oracle, orders, errors)
    details = {"full_error": float(full.max()),
               "prefix_errors": {name: {int(s): float(e.max()) for s, e in by_size.items()}
                                 for name, by_size in errors.items()}, "gate": gate}
    if not gate["open"]:
        details["reason"] = (f"removing the {gate['size']} examples the {gate['order']} order ranks most suspicious "
                             f"did not lower the error by more than 20%, both against all data and against "
                             f"removing as many random examples, at level {context.alpha:g} over "
                             f"{len(gate['seeds'])} fresh seeds (p = {gate['p_value']:.3g} and "
                             f"{gate['p_value_vs_random']:.3g})")
    return full, orders, errors, best, details


def sharpest_order(context: Context, oracle: Oracle, orders: dict[str, np.ndarray],
                   errors: dict[str, dict[int, np.ndarray]],
                   level: float) -> tuple[str, np.ndarray, dict[int, np.ndarray]]:
    """The order whose prefixes concentrate the harm soonest, chosen by measurement.

    Each order's knee is the least prefix size whose removal brings the error to ``level``
    under every search seed, refined below the least such measured size by halving while the
    halved prefix still does (all orders one size at a time, so that an order that falls
    short costs ``search_seeds`` trials). The order kept is the one with the least knee (the
    lowest mean log error there breaks ties; the combined order wins a tie), so a weak
    screen costs trials, not the search's reach (measured: a set of n = 1000 whose 82 poisons
    the isolation forest ranks behind decoys that it ranks first, where the combined knee
    reached 256). ``level`` is at least the best prefix error, so some order reaches it.

    Returns the order's name (``combined`` or the screen's), the order (n,) and the errors
    without its prefixes ({size: (search seeds,)}), ``errors`` updated in place.
    """
    knees = {name: knee_of(by_size, level) for name, by_size in errors.items()}
    live = [name for name, knee in knees.items() if knee is not None and knee > 1]
    while live:
        asked = [name for name in live if knees[name] // 2 not in errors[name]]
        measured = errors_of(oracle, [mask_without(context.n, orders[name][:knees[name] // 2]) for name in asked],
                             context)
        for name, e in zip(asked, measured):
            errors[name][knees[name] // 2] = e
        passed = [name for name in live if errors[name][knees[name] // 2].max() <= level]
        for name in passed:
            knees[name] //= 2
        live = [name for name in passed if knees[name] > 1]

    def rank(name: str) -> tuple[int, float]:
        return knees[name], float(np.log(errors[name][knees[name]]).mean())
    name = min((name for name in orders if knees[name] is not None), key=rank)
    return name, orders[name], errors[name]


def rank_band_of(controls: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
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


def first_passing(lo: int, hi: int, passes: Callable[[int], bool]) -> int:
    """The least a in (lo, hi] with ``passes(a)``, by bisection, for a test known to fail at
    ``lo`` and pass at ``hi`` that, once passed, passes for every larger a."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    return hi


def finish(flagged: list[int], scores: np.ndarray, context: Context, oracle: Oracle, details: dict) -> Verdict:
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


def screen_scores(context: Context) -> np.ndarray:
    return np.zeros(context.n) if context.screen is None else np.asarray(context.screen, float)


def rank01(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values) / max(len(values), 1)
