"""The baselines: leave-one-out and Banzhaf values over random half-subsets."""

from __future__ import annotations

import numpy as np

from auditor.search.common import finish
from auditor.search.confirm import log_error
from auditor.search.oracle import Context, Oracle, Verdict
from auditor.trials import Trial


def leave_one_out(context: Context, oracle: Oracle) -> Verdict:
    """Remove each example alone; score = log error(all) - log error(all but i)."""
    n, seed = context.n, context.seed
    full = oracle.ask([Trial(np.ones(n, bool), seed)])[0]
    outs = oracle.ask([Trial.keep_all_but(n, [i], seed) for i in range(n)])
    scores = np.array([log_error(full) - log_error(o) for o in outs])
    return finish(_outliers(scores), scores, context, oracle, {"full_error": full.error})


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
    value = -np.array([log_error(o) for o in outs])                           # (m,)
    with_i = (masks * value[:, None]).sum(0) / np.maximum(masks.sum(0), 1)
    without_i = ((~masks) * value[:, None]).sum(0) / np.maximum((~masks).sum(0), 1)
    scores = without_i - with_i
    return finish(_outliers(scores), scores, context, oracle, {"subsets": m})


def _outliers(scores: np.ndarray, *, z: float = 4.0) -> list[int]:
    """Examples whose score is a robust outlier above the rest (median + z * 1.4826 MAD)."""
    med = np.median(scores)
    mad = 1.4826 * np.median(np.abs(scores - med)) + 1e-12
    return sorted(int(i) for i in np.flatnonzero((scores - med) / mad > z))
