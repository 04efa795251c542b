"""The search's statistics: exactness of the sign-flip test, its level where seeds' log errors
are bimodal (and the t-test's excess there), its power, its interval, the multiplicity
corrections and the named streams. Pure numpy simulations, no training."""

import math

import numpy as np
import pytest
from scipy import stats

from auditor.search.stats import (
    benjamini_hochberg,
    bootstrap_interval,
    clopper_pearson,
    holm,
    least_seeds,
    sign_flip_interval,
    sign_flip_test,
    signed_rank_test,
    stream,
    streams,
)

ALPHA = 0.05
MARGIN = math.log(1.2)
GOOD, BAD = math.log(0.05), math.log(0.5)        # the two basins a model's log error lands in


def _bimodal(rng, shape, *, bad=0.4, spread=0.01):
    """Log errors (shape) of models that land in the bad basin (10x the good one's error)
    with probability ``bad``, each basin narrow (``spread``)."""
    return np.where(rng.random(shape) < bad, BAD, GOOD) + spread * rng.standard_normal(shape)


def _null_at_margin(rng, runs, seeds, **kw):
    """Paired log ratios (runs, seeds) of a removal that lowers the error by exactly the margin
    (1.2x) in either basin: each arm lands in its basin independently."""
    return _bimodal(rng, (runs, seeds), **kw) + MARGIN - _bimodal(rng, (runs, seeds), **kw)


def test_exact_p_values_count_sign_flips():
    assert sign_flip_test(np.full(8, 1.0)) == 1 / 256                      # the least p over 8 pairs
    assert sign_flip_test(np.full(2, 1.0)) == 0.25
    assert sign_flip_test([1.0, 2.0, 3.0, -0.5]) == 2 / 16                  # observed and all-positive
    assert sign_flip_test([]) == 1.0
    assert sign_flip_test(np.full(8, 0.1), margin=0.2) == 1.0               # all below the margin
    # against brute force: the share of sign flips whose sum is at least the observed one
    rng = np.random.default_rng(0)
    x = rng.standard_normal(7) + 0.3
    flips = np.array(np.meshgrid(*[[1, -1]] * 7)).reshape(7, -1).T          # (128, 7)
    assert sign_flip_test(x, margin=0.1) == pytest.approx(np.mean(flips @ (x - 0.1) >= (x - 0.1).sum() - 1e-12))


def test_least_seeds_is_the_fewest_that_confirm_despite_one_dissenting_seed():
    s = least_seeds(alpha=ALPHA)
    assert s == 6
    dissent = np.r_[np.full(s - 1, 1.0), -0.5]                              # one seed goes the wrong way
    assert sign_flip_test(dissent) < ALPHA
    assert sign_flip_test(dissent[1:]) > ALPHA
    assert sign_flip_test(np.ones(s - 2)) > ALPHA                           # 4 seeds can never confirm


def test_monte_carlo_p_values_beyond_16_seeds_need_a_named_stream_and_agree_with_the_exact_ones():
    x = np.random.default_rng(1).standard_normal(20) + 0.5
    with pytest.raises(ValueError):
        sign_flip_test(x)
    p = sign_flip_test(x, rng=stream(0, "test"))
    assert p == sign_flip_test(x, rng=stream(0, "test"))                    # reproducible
    # at 16 pairs (the last exact size) the Monte Carlo estimate is within its error of the exact p
    y = x[:16]
    from auditor.search import stats as module
    subsets, _ = module._subsets(16, None, 0)
    exact = sign_flip_test(y)
    draws = (stream(0, "mc").random((module.DRAWS, 16)) < 0.5).astype(float)
    estimate = (1 + np.count_nonzero(draws @ y <= 1e-9 * np.abs(y).sum())) / (1 + module.DRAWS)
    assert abs(estimate - exact) < 4 * math.sqrt(exact * (1 - exact) / module.DRAWS) + 1e-3
    assert len(subsets) == 2 ** 16


def test_sign_flip_keeps_its_level_on_bimodal_seeds_where_the_t_test_does_not():
    # The removal lowers the error by exactly the margin; each model lands in a good or a
    # 10x worse basin (40%). Measured over 20 000 simulated confirmations of 8 seeds: the
    # sign-flip test rejects 4.6% (Clopper-Pearson 95% upper bound 4.9%), the one-sample
    # t-test 5.5% (lower bound 5.2%): above its nominal 5%.
    rng = np.random.default_rng(2)
    runs = 20_000
    d = _null_at_margin(rng, runs, 8)                                       # (runs, 8)
    flips = sum(sign_flip_test(x, margin=MARGIN) < ALPHA for x in d)
    t = int((stats.ttest_1samp(d, MARGIN, axis=1, alternative="greater").pvalue < ALPHA).sum())
    print(f"type-I error over {runs} bimodal nulls of 8 seeds: sign-flip {flips / runs:.4f}, t-test {t / runs:.4f}")
    assert clopper_pearson(flips, runs)[0] <= ALPHA                         # not above alpha
    assert flips / runs <= ALPHA + 0.002
    assert clopper_pearson(t, runs)[0] > ALPHA                              # the t-test's excess is real


@pytest.mark.parametrize("seeds", [6, 12])
def test_sign_flip_level_holds_at_other_seed_counts_and_with_nothing_removed(seeds):
    rng = np.random.default_rng(seeds)
    runs = 4_000
    at_margin = _null_at_margin(rng, runs, seeds, bad=0.5)
    nothing = _bimodal(rng, (runs, seeds)) - _bimodal(rng, (runs, seeds))   # the removal does nothing
    for d, margin in ((at_margin, MARGIN), (nothing, 0.0)):
        rejected = sum(sign_flip_test(x, margin=margin) < ALPHA for x in d)
        assert clopper_pearson(rejected, runs)[0] <= ALPHA


def test_a_real_threefold_effect_is_found_most_of_the_time():
    # 3x lower error without the set, the same basins (bad 20%, 10x worse): measured 62% of
    # 2000 runs over 8 seeds, 85% over 16; the signed-rank test, which ranks the pairs'
    # sizes, 30% and 59%
    rng = np.random.default_rng(3)
    runs = 1_000
    for seeds, least in ((8, 0.5), (16, 0.75)):
        d = _bimodal(rng, (runs, seeds), bad=0.2, spread=0.1) + math.log(3) - _bimodal(rng, (runs, seeds), bad=0.2,
                                                                                       spread=0.1)
        power = np.mean([sign_flip_test(x, margin=MARGIN) < ALPHA for x in d])
        assert power > least
        assert power > np.mean([signed_rank_test(x, margin=MARGIN) < ALPHA for x in d[:200]])
    # without bimodality the effect is found every time over 8 seeds
    clear = math.log(3) + 0.1 * rng.standard_normal((200, 8))
    assert all(sign_flip_test(x, margin=MARGIN) < ALPHA for x in clear)


def test_the_interval_inverts_the_test_and_covers_bimodal_shifts():
    x = np.random.default_rng(4).standard_normal(8)
    lo, hi = sign_flip_interval(x)
    assert lo < x.mean() < hi
    assert sign_flip_test(x, margin=lo - 1e-6) <= 0.025 < sign_flip_test(x, margin=lo + 1e-6)
    assert sign_flip_test(-x, margin=-hi - 1e-6) <= 0.025 < sign_flip_test(-x, margin=-hi + 1e-6)
    assert sign_flip_interval(x[:6]) == (x[:6].min(), x[:6].max())          # 6 pairs: r = 1
    assert sign_flip_interval(x[:5]) == (-math.inf, math.inf)               # too few pairs for 95%
    assert all(math.isnan(v) for v in sign_flip_interval([]))
    # coverage over bimodal pairs shifted by 1 (8 seeds): measured 94.8% of 2000 runs, a percentile
    # bootstrap of the same pairs 84.8%
    rng = np.random.default_rng(5)
    d = 1.0 + _bimodal(rng, (1_000, 8), spread=0.1) - _bimodal(rng, (1_000, 8), spread=0.1)
    covered = sum(lo <= 1.0 <= hi for lo, hi in map(sign_flip_interval, d))
    assert clopper_pearson(covered, len(d))[1] >= 0.95
    boot = stream(0, "bootstrap")
    assert sum(lo <= 1.0 <= hi for lo, hi in (bootstrap_interval(v, rng=boot) for v in d[:300])) < 0.92 * 300
    big = np.random.default_rng(6).standard_normal(40) + 2.0                # Monte Carlo beyond 16 pairs
    lo, hi = sign_flip_interval(big, rng=stream(0, "interval"))
    assert lo < big.mean() < hi and hi - lo < 1.5


def test_holm_and_benjamini_hochberg_adjust_as_defined():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])               # 4p, 3p, 2p, p sorted, monotone
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.9]).max() <= 1.0 and len(holm([])) == 0
    # family-wise error over 10 true nulls: Holm keeps it, unadjusted tests do not
    rng = np.random.default_rng(7)
    nulls = rng.random((2_000, 10))
    assert np.mean((holm_rows := np.array([holm(r) for r in nulls])).min(axis=1) < ALPHA) <= ALPHA + 0.01
    assert np.mean(nulls.min(axis=1) < ALPHA) > 0.3
    assert holm_rows.shape == nulls.shape


def test_clopper_pearson_is_exact():
    lo, hi = clopper_pearson(0, 20)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    lo, hi = clopper_pearson(5, 100)
    assert lo < 0.05 < hi


def test_named_streams_do_not_depend_on_order_or_company():
    a = streams(3, "confirmation/random-removal/1003", "search/controls")
    b = streams(3, "search/controls", "other", "confirmation/random-removal/1003")
    for name in a:
        assert np.array_equal(a[name].integers(0, 2**31, 5), b[name].integers(0, 2**31, 5))
    x, y = stream(3, "x").random(4), stream(3, "y").random(4)
    assert not np.array_equal(x, y)
    assert not np.array_equal(stream(3, "x").random(4), stream(4, "x").random(4))
    spawned = np.random.default_rng(np.random.SeedSequence(3).spawn(1)[0]).random(4)
    assert not np.array_equal(spawned, x)
