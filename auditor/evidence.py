"""Per-example evidence for the report, computed from an audit's stored outcomes.

An audit stores one outcome per trial (error, effective rank of A, ...) keyed by the trial
(mask, seed); the strategy's verdict keeps only summaries in ``details``. The tests behind
each flagged example are recovered without training anything: the strategy is replayed on
the stored outcomes (it is a pure function of them) to check that the audit's context is
rebuilt exactly, and the trials of the tests that decided each example are looked up by
their masks: for core testing the core with the example (or the smallest group it was
tested in) added, for group testing the clean base with its group added back, for
leave-one-out the set without it.

:func:`build_evidence` returns one record per example of interest: the flagged ones, and,
shown apart, those that did harm without the poisons' mechanism (``without_mechanism``)
and the candidates the confirmation did not confirm (``unconfirmed``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from auditor.search.common import (
    errors_of,
    followed_order,
    mask_with,
    mask_without,
    order_of,
    rank_band_of,
    without_controls,
)
from auditor.search.confirm import MIN_EFFECT
from auditor.search.core import CORE_DRAWS, controls_and_pool, core_reference, draw_core
from auditor.search.oracle import Context, NeedTrials, Oracle
from auditor.search.plan import STRATEGIES

ROLES = ("flagged", "without_mechanism", "unconfirmed")


class _Recorder(Oracle):
    """An oracle over stored outcomes that remembers every mask it was asked about."""

    def __init__(self, outcomes, *, budget: int):
        super().__init__(outcomes, budget=budget)
        self.masks: dict[bytes, np.ndarray] = {}

    def ask(self, trials, *, search=True):
        out = super().ask(trials, search=search)
        for t in trials:
            self.masks.setdefault(np.packbits(t.mask).tobytes(), np.asarray(t.mask, bool))
        return out


def build_evidence(result, dataset, config) -> dict:
    """The evidence of every example the verdict singles out.

    Parameters
    ----------
    result : auditor.engine.AuditResult
    dataset : auditor.data.Dataset
    config : auditor.config.AuditConfig

    Returns
    -------
    dict with ``records`` (list of per-example dicts, see :func:`_record`), ``replayed``
    (whether the stored outcomes replayed to the same verdict, so that the tests' numbers
    could be recovered) and ``note`` (why not, where they could not).
    """
    verdict = result.verdict
    roles = _roles(verdict)
    if not roles:
        return {"records": [], "replayed": True, "note": None}
    try:
        context = audit_context(result, dataset, config)
        recorder = _Recorder(result.outcomes, budget=context.budget)
        replay = STRATEGIES[result.strategy](context, recorder)
    except Exception as exc:        # a diagnostic: failing to recover it must not fail the report
        return {"records": _bare(roles, result, dataset), "replayed": False,
                "note": f"the stored outcomes do not replay the search ({type(exc).__name__})"}
    if replay.flagged != verdict.flagged:
        return {"records": _bare(roles, result, dataset), "replayed": False,
                "note": "the stored outcomes replay to another verdict"}
    tests = {"core": _core_tests, "group": _group_tests, "loo": _loo_tests}.get(result.strategy)
    measured = {}
    if tests is not None:
        try:
            measured = tests(context, Oracle(result.outcomes, budget=10**9), recorder, verdict, list(roles))
        except Exception as exc:    # (missing trials: NeedTrials; the tests' numbers are a diagnostic)
            return {"records": _bare(roles, result, dataset), "replayed": True,
                    "note": f"the tests' trials are not all stored ({type(exc).__name__})"}
    records = [_record(i, role, result, dataset, measured.get(i, {})) for i, role in roles.items()]
    return {"records": records, "replayed": True, "note": None}


def audit_context(result, dataset, config) -> Context:
    """The :class:`~auditor.search.oracle.Context` the audit's strategy ran with."""
    from auditor.engine import build_problem, search_context

    return search_context(build_problem(dataset, config), result.screens, config=config, budget=result.budget)


def _roles(verdict) -> dict[int, str]:
    details = verdict.details
    roles = {int(i): "flagged" for i in verdict.flagged}
    for i in details.get("without_mechanism", []) or []:
        roles.setdefault(int(i), "without_mechanism")
    for i in details.get("unconfirmed", []) or []:
        roles.setdefault(int(i), "unconfirmed")
    return dict(sorted(roles.items()))


def _bare(roles: dict[int, str], result, dataset) -> list[dict]:
    return [_record(i, role, result, dataset, {}) for i, role in roles.items()]


def _record(i: int, role: str, result, dataset, measured: dict) -> dict:
    """One example's evidence.

    Keys: ``index``, ``role`` (flagged / without_mechanism / unconfirmed), ``score``,
    ``label``, ``is_poison`` (with ground truth), ``sequence`` (its values, (k,) or (k, c)),
    and, where the tests were recovered: ``decided_by`` (the test that decided it, in words), ``test``
    (short name), ``base`` (what it was added to), ``group_size``, ``seeds``,
    ``harm_log`` (per seed: log of the error with it over the reference error),
    ``harm_ratio`` (the same as factors), ``harm_ratio_mean`` (geometric mean over the
    seeds), ``harm_ratio_ci95`` (95% t-interval of that mean; None with one seed),
    ``control_ratio`` (per seed: the most a control moved the error, as a factor),
    ``threshold_ratio`` (core testing: the factor past which a test counts as harmful),
    ``rank_rise`` (per seed: how much adding it raised the effective rank of A over the
    controls' median), ``rank_band`` (per seed: how far any control moved it, at least 0.1)
    and ``second_core_ratio`` (core testing: the harm replicated on a second core).
    """
    record = {"index": i, "role": role, "score": _finite(result.verdict.scores[i]),
              "label": _label(dataset.y[i]), "sequence": np.asarray(dataset.x[i], float).tolist()}
    if dataset.is_poison is not None:
        record["is_poison"] = bool(dataset.is_poison[i])
    if measured:
        harm = np.asarray(measured.pop("harm_log"), float)
        lo, hi = _t_interval(harm)
        record.update(measured, harm_log=harm.tolist(), harm_ratio=np.exp(harm).tolist(),
                      harm_ratio_mean=float(np.exp(harm.mean())),
                      harm_ratio_ci95=None if lo is None else [math.exp(lo), math.exp(hi)])
    return record


def _label(value):
    value = np.asarray(value)
    return value.tolist() if value.ndim else (int(value) if value.dtype.kind in "iu" else float(value))


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _t_interval(values: np.ndarray) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


# --------------------------------------------------------------------------- the tests


def _smallest_group(recorder: _Recorder, base: np.ndarray, i: int, within: np.ndarray) -> list[int]:
    """The smallest set G (i in G, G within ``within``) whose trial ``base + G`` was asked."""
    best = None
    for mask in recorder.masks.values():
        if not mask[i] or (base & ~mask).any():
            continue
        added = np.flatnonzero(mask & ~base)
        if within[added].all() and (best is None or len(added) < len(best)):
            best = added
    if best is None:
        raise KeyError(f"no test of example {i}")
    return [int(j) for j in best]


def _addition(oracle: Oracle, context: Context, base: np.ndarray, group: list[int], seeds: list[int],
              reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log error over ``reference`` and effective rank of ``base + group`` per seed."""
    mask = mask_with(base, group)
    errors = errors_of(oracle, [mask], context, seeds=seeds)[0]
    ranks = errors_of(oracle, [mask], context, seeds=seeds, rank=True)[0]
    return np.log(errors / reference), ranks


def _core_tests(context, oracle, recorder, verdict, examples) -> dict[int, dict]:
    """Core testing: each example's test on the core (:func:`auditor.search.core.core_testing`)."""
    d, n = verdict.details, context.n
    order = followed_order(context, d.get("order", "combined"))
    reach = min(4 * int(d["knee"]), n // 2)
    controls, pool = controls_and_pool(context, order[reach:], order_of(context)[:int(d.get("reach_combined", 0))])
    seeds = [context.seed + j for j in range(int(d["test_seeds"]))]

    def draw(k: int) -> np.ndarray:
        return draw_core(context, pool, k)

    cores = [draw(k) for k in range(int(d["core_draws"]))]
    core = next((c for c in cores if float(errors_of(oracle, [c], context, seeds=seeds)[0].max()) == d["core_error"]),
                cores[-1])
    reference_error, control_harm = core_reference(oracle, context, seeds, core, controls)
    control = np.nanmax(control_harm[:, controls], axis=1) if controls else np.zeros(len(seeds))
    centre, band = rank_band_of(errors_of(oracle, [mask_with(core, [c]) for c in controls], context, seeds=seeds,
                                          rank=True)) if controls else (None, None)
    tau = np.asarray(d["threshold"], float)
    reachable = np.zeros(n, bool)
    reachable[order[:reach]] = True
    out = {}
    for i in examples:
        group = _smallest_group(recorder, core, i, reachable)
        harm, ranks = _addition(oracle, context, core, group, seeds, reference_error)
        rec = {"base": f"a random core of {int(core.sum())} examples", "group_size": len(group), "seeds": seeds,
               "harm_log": harm, "control_ratio": np.exp(control).tolist(), "threshold_ratio": np.exp(tau).tolist()}
        shows = None
        if centre is not None:
            rise = ranks - centre
            shows = bool((rise > band).all())
            rec.update(rank_rise=rise.tolist(), rank_band=band.tolist())
        second = _second_core(context, oracle, draw(CORE_DRAWS), controls, i)
        if second is not None:
            rec["second_core_ratio"] = second
        rec.update(_core_reason(alone=len(group) == 1, past=bool((harm > tau).all()), shows=shows,
                                mean=float(harm.mean()), rank_is_bias=context.mechanism is not None))
        out[i] = rec
    return out


def _second_core(context, oracle, second, controls, i) -> float | None:
    """The harm factor of example i on the second core (the weaker candidates' replication), if tested."""
    seed = [context.seed + context.search_seeds - 1]
    try:
        error, _ = core_reference(oracle, context, seed, second, controls)
        return float(np.exp(_addition(oracle, context, second, [i], seed, error)[0][0]))
    except NeedTrials:
        return None


def _core_reason(*, alone: bool, past: bool, shows: bool | None, mean: float, rank_is_bias: bool) -> dict:
    rank = ("; it also raised the effective rank of A past every control" if shows
            else "; it did not raise the effective rank of A past every control" if shows is False else "")
    if alone and past:
        return {"test": "core_alone",
                "decided_by": "core test, alone: the core's error rose past the threshold under every seed, more "
                              f"than with any control{rank}"}
    if alone and shows and mean > MIN_EFFECT and rank_is_bias:
        return {"test": "core_mechanism",
                "decided_by": "core test, alone, by the mechanism: raised the effective rank of A past every "
                              "control and the core's error by more than 20% in the mean over the seeds"}
    return {"test": "core_weaker",
            "decided_by": "weaker candidate: more harm than every control and 20% in the mean over the seeds, "
                          f"replicated on a second core, kept by the joint check{rank}"}


def _group_tests(context, oracle, recorder, verdict, examples) -> dict[int, dict]:
    """Group testing: each example's step-2 test, added back to the clean base
    (:func:`auditor.search.group.group_testing`)."""
    d, n = verdict.details, context.n
    removed = followed_order(context, d.get("order", "combined"))[:int(d["removed"])]
    base = mask_without(n, removed)
    seeds = [context.seed + j for j in range(context.search_seeds)]
    moved = without_controls(oracle, context, base, stream=2)
    reference = np.median(moved, axis=0)
    band = np.maximum(np.max([np.log(e / reference) for e in moved], axis=0, initial=0.0), MIN_EFFECT)
    base_error = errors_of(oracle, [base], context)[0]
    loose = bool((reference > base_error * math.exp(MIN_EFFECT)).all())
    centre, rank_band = rank_band_of(without_controls(oracle, context, base, stream=2, rank=True))
    within = np.zeros(n, bool)
    within[removed] = True
    out = {}
    for i in examples:
        group = _smallest_group(recorder, base, i, within)
        harm, ranks = _addition(oracle, context, base, group, seeds, reference)
        rise = ranks - centre
        rec = {"base": f"the clean base of {int(base.sum())} examples", "group_size": len(group), "seeds": seeds,
               "harm_log": harm, "control_ratio": np.exp(band).tolist(), "rank_rise": rise.tolist(),
               "rank_band": rank_band.tolist()}
        if context.mechanism is not None:
            shows = bool((rise > rank_band).all())
            rec.update(test="group_mechanism", decided_by=(
                "group testing, step 2: removed in the clean-base search, added back to the clean base; "
                + ("raised the effective rank of A past every control under every seed" if shows else
                   "raised the error but not the effective rank of A past every control")))
        elif loose and bool((harm > band).all()):
            rec.update(test="group_settled", decided_by=(
                "group testing, step 2: added back to the clean base, more harm than every control "
                "and 20% under every seed"))
        else:
            rec.update(test="group_joint", decided_by=(
                "group testing, steps 3-4: not among the examples that went back to the clean base together "
                "(its own harm, added back to the base in step 2, is shown)"))
        out[i] = rec
    return out


def _loo_tests(context, oracle, recorder, verdict, examples) -> dict[int, dict]:
    """Leave-one-out: the set with and without each example, under the search seed."""
    n, seeds = context.n, [context.seed]
    rank = errors_of(oracle, [np.ones(n, bool)], context, seeds=seeds, rank=True)[0]
    out = {}
    for i in examples:
        without = mask_without(n, [i])
        harm, ranks = _addition(oracle, context, without, [i], seeds, errors_of(oracle, [without], context,
                                                                                seeds=seeds)[0])
        base_rank = errors_of(oracle, [without], context, seeds=seeds, rank=True)[0]
        out[i] = {"base": "all the other examples", "group_size": 1, "seeds": seeds, "harm_log": harm,
                  "rank_rise": (rank - base_rank).tolist(), "test": "loo_outlier",
                  "decided_by": "leave-one-out: removing it lowered the error by a robust outlier of all removals "
                                "(more than 4 robust standard deviations above the median)"}
    return out
