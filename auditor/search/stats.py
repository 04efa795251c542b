"""Tests and intervals for a few seeds whose errors are bimodal, and named random streams.

A trained model's error depends on its seed, and not smoothly: a model lands in a good or a
bad basin of the training, so that over a handful of seeds the log errors of one training
set form two clusters. Tests that lean on normality (the one-sample t-test) then miss their
level, and the bootstrap has too few draws to stand on. The tests here assume only what the
design gives: trials of the two arms of a comparison share a seed, the seeds are drawn
independently, and where the arms do not differ the paired difference is as likely to be
positive as negative (its distribution is symmetric). Under that, the sign-flip permutation
test is exact at any number of seeds and for any shape of the errors' distribution,
bimodal included.

(SciPy is imported where a function needs it, so that the configuration can import
:func:`least_seeds` cheaply.) Every random choice draws from a named stream (:func:`streams`): the same seed and name
give the same numbers, however many other streams exist and in whatever order they are
asked for.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np

EXACT_SEEDS = 16          # up to this many pairs, sign-flip tests enumerate all 2^S flips
DRAWS = 9_999             # random sign flips (subsets) of the Monte Carlo version beyond it
ALPHA = 0.05              # the level of the audit's tests: the harm gate's and the confirmation's


def streams(seed: int, *names: str) -> dict[str, np.random.Generator]:
    """Independent random generators named for their purpose, all derived from ``seed``.

    Parameters
    ----------
    seed : int (>= 0), the audit's seed
    *names : str, one per purpose (e.g. ``"confirmation/random-removal/3"``)

    Returns
    -------
    dict name -> numpy Generator (PCG64)

    Notes
    -----
    Each stream is ``np.random.SeedSequence(seed, spawn_key=key(name))``, where ``key`` is the
    first 16 bytes of the SHA-256 of the name read as four 32-bit words. That is how
    ``SeedSequence.spawn`` itself derives its children (a child is the parent's entropy with
    an extended spawn key), with the key taken from the name instead of a counter: a name
    gives the same stream whichever other names are asked for and in whatever order (a
    counter would renumber them), and no name's stream coincides with a counter-spawned
    child of the same seed (those keys have one word, these four).
    """
    return {name: np.random.default_rng(np.random.SeedSequence(seed, spawn_key=_key(name))) for name in names}


def stream(seed: int, name: str) -> np.random.Generator:
    """The one stream ``name`` of :func:`streams`."""
    return streams(seed, name)[name]


def _key(name: str) -> tuple[int, ...]:
    digest = hashlib.sha256(name.encode()).digest()[:16]
    return tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))


def least_seeds(*, alpha: float) -> int:
    """The fewest pairs with which a one-sided sign-flip test at level ``alpha`` can reject
    even when one pair (the smallest in size) goes the wrong way: ceil(log2(1 / alpha)) + 1.

    With S pairs the least p-value is 2^-S (every pair the same way) and the next 2 * 2^-S
    (the smallest pair flipped), so a verdict tolerates one dissenting seed from S >=
    log2(2 / alpha) on; at alpha = 0.05 that is 6 (p = 2/64 = 0.031). With fewer than
    log2(1 / alpha) pairs (5 at 0.05) nothing can ever be confirmed.
    """
    return math.ceil(math.log2(1 / alpha)) + 1


@lru_cache(maxsize=EXACT_SEEDS + 1)
def _all_subsets(size: int) -> np.ndarray:
    """Every subset of ``size`` items as a 0/1 matrix (2^size, size), the empty one first."""
    codes = np.arange(2 ** size)[:, None]                                   # (2^S, 1)
    return ((codes >> np.arange(size)) & 1).astype(float)                   # (2^S, S)


def _subsets(size: int, rng: np.random.Generator | None, draws: int) -> tuple[np.ndarray, bool]:
    """All subsets (exact) up to ``EXACT_SEEDS`` items, else ``draws`` random ones (each
    item in with probability 1/2) from ``rng``: (m, size) 0/1 matrix, whether exact."""
    if size <= EXACT_SEEDS:
        return _all_subsets(size), True
    if rng is None:
        raise ValueError(f"a sign-flip test over {size} pairs (more than {EXACT_SEEDS}) draws random flips: "
                         "pass rng, a named stream")
    return (rng.random((draws, size)) < 0.5).astype(float), False


def sign_flip_test(diffs, *, margin: float = 0.0, rng: np.random.Generator | None = None,
                   draws: int = DRAWS) -> float:
    """One-sided paired sign-flip permutation test that the differences exceed ``margin``.

    H0: the distribution of the differences is symmetric about ``margin`` (at the margin,
    e.g. the removal shifts the log error by exactly ``margin``, or, at ``margin`` 0, it
    does nothing, so that the two arms of each pair are exchangeable); the alternative: it
    lies above. The statistic is the sum of ``diffs - margin``; its null distribution is
    that of the sums with each pair's sign flipped at random.

    Parameters
    ----------
    diffs : array (S,), paired differences (e.g. log error ratios, one per seed); NaNs are dropped
    margin : float, the shift the differences must exceed
    rng : numpy Generator, a named stream (:func:`streams`), needed only for S > ``EXACT_SEEDS``
    draws : int, random flips of the Monte Carlo version

    Returns
    -------
    float, the p-value. For S <= ``EXACT_SEEDS`` exact: the share of all 2^S sign flips whose
    sum is at least the observed one (least value 2^-S: 0.0039 over 8 pairs, 0.25 over 2);
    beyond, (1 + flips at least as large) / (1 + ``draws``), a valid p-value too. 1 without
    any pair.

    Notes
    -----
    Valid at any S and for any symmetric shape, bimodal included: given the pairs' absolute
    deviations from the margin, their signs are independent fair coins under H0. A t-test
    on the same bimodal differences misses its level (see tests/auditor/test_search_stats.py).
    """
    x = np.asarray(diffs, float)
    x = x[~np.isnan(x)] - margin                                            # (S,)
    if not len(x):
        return 1.0
    flips, exact = _subsets(len(x), rng, draws)                             # (m, S): 1 = flipped
    # flipping the set A changes the sum by -2 sum_A x: as large as observed where sum_A x <= 0
    tol = 1e-9 * max(float(np.abs(x).sum()), 1e-300)
    extreme = int(np.count_nonzero(flips @ x <= tol))
    return extreme / len(flips) if exact else (1 + extreme) / (1 + len(flips))


def signed_rank_test(diffs, *, margin: float = 0.0) -> float:
    """One-sided Wilcoxon signed-rank test of the same H0 as :func:`sign_flip_test` (the
    differences symmetric about ``margin``), by :func:`scipy.stats.wilcoxon` (exact for
    small samples without ties). It ranks the pairs' sizes, so one pair in a far basin
    weighs as a rank, not by its size; less powerful than the sign-flip test where the
    effect is a shift of every pair alike. NaNs are dropped; 1 without a nonzero pair."""
    from scipy import stats

    x = np.asarray(diffs, float)
    x = x[~np.isnan(x)] - margin
    if not np.count_nonzero(x):
        return 1.0
    return float(stats.wilcoxon(x, alternative="greater").pvalue)


def sign_flip_interval(diffs, *, level: float = 0.95, rng: np.random.Generator | None = None,
                       draws: int = DRAWS) -> tuple[float, float]:
    """Confidence interval for the centre of the paired differences, by inverting the
    sign-flip test (Hartigan, 1969).

    Parameters
    ----------
    diffs : array (S,), paired differences; NaNs are dropped
    level : float, confidence level
    rng : numpy Generator, a named stream, needed only for S > ``EXACT_SEEDS``
    draws : int, random subsets of the Monte Carlo version

    Returns
    -------
    (low, high): the shifts mu that :func:`sign_flip_test` does not reject at (1 - level) / 2
    on either side. Exact: low is the r-th smallest of the means of the 2^S - 1 nonempty
    subsets of the differences, r = floor((1 - level) / 2 * 2^S), high the r-th largest
    (over 6 pairs at 95%: their least and largest; over 8, the 6th). Infinite where r = 0
    (fewer than log2(2 / (1 - level)) pairs: 5 at 95%); NaN without any pair.

    Notes
    -----
    Why this and not a bootstrap or a t-interval: the coverage is exact whenever the
    differences are symmetric about their centre mu, whatever their shape, and then mu is
    their mean; so it holds for the bimodal differences of a basin-hopping training, the
    same assumption as the test's and no other. A t-interval assumes normal means, which 8
    bimodal draws are not; a percentile bootstrap resamples 8 values, whose two clusters it
    reproduces in proportions that 8 draws fix poorly, and undercovers at so few pairs.
    The interval is consistent with the test: ``sign_flip_test(diffs, margin=m)`` is at most
    (1 - level) / 2 where m lies below low.
    """
    x = np.asarray(diffs, float)
    x = x[~np.isnan(x)]
    if not len(x):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return _lower(x, tail, rng, draws), -_lower(-x, tail, rng, draws)


def _lower(x: np.ndarray, tail: float, rng, draws: int) -> float:
    """The least mu that the one-sided sign-flip test (alternative: above mu) does not
    reject at ``tail``: the test rejects mu where (1 + #{nonempty A: mean_A x <= mu}) / m <=
    tail, m the number of subsets (2^S, or draws + 1), so that the bound is the r-th
    smallest subset mean, r = floor(tail * m)."""
    subsets, exact = _subsets(len(x), rng, draws)                           # (m', S)
    sizes = subsets.sum(axis=1)                                             # (m',)
    nonempty = sizes > 0
    means = np.sort((subsets[nonempty] @ x) / sizes[nonempty])
    r = math.floor(tail * (len(subsets) if exact else len(subsets) + 1))
    return float(means[r - 1]) if r >= 1 else -math.inf


def bootstrap_interval(values, *, rng: np.random.Generator, level: float = 0.95,
                       draws: int = 2_000) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (NaNs dropped).

    Descriptive: for one arm's log errors (a geometric mean's spread), where no exact
    interval for a mean exists without assuming a shape, and the arm's bimodal errors are
    not symmetric. At few values it undercovers (it cannot see beyond the values drawn);
    the tested effects use :func:`sign_flip_interval`. (mean, mean) for fewer than two values.
    """
    x = np.asarray(values, float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        m = float(x.mean()) if len(x) else math.nan
        return m, m
    means = x[rng.integers(0, len(x), size=(draws, len(x)))].mean(axis=1)    # (draws,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate): the i-th smallest p
    times (m - i + 1), made monotone, at most 1. Reject where the adjusted p is at most
    alpha; valid under any dependence among the tests.

    Parameters
    ----------
    p_values : array (m,)

    Returns
    -------
    ndarray (m,), in the input's order
    """
    p = np.asarray(p_values, float)
    m = len(p)
    if not m:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return adjusted


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate, for independent or
    positively dependent tests), by :func:`scipy.stats.false_discovery_control`.

    Parameters
    ----------
    p_values : array (m,)

    Returns
    -------
    ndarray (m,), in the input's order
    """
    from scipy import stats

    p = np.asarray(p_values, float)
    return p.copy() if not len(p) else np.asarray(stats.false_discovery_control(p, method="bh"), float)


def clopper_pearson(successes: int, trials: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of a binomial proportion, by
    :func:`scipy.stats.binomtest`; e.g. for a test's rejection rate over simulated nulls."""
    from scipy import stats

    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)
