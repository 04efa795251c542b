"""Trials and outcomes: the generic Outcome with its extras, the outcomes stored before
extras existed, and the narrow Problem seam with its optional protocols."""

from __future__ import annotations

import json
import math

import numpy as np

from auditor.engine import build_problem, run_audit, search_context
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.executors import InlineExecutor
from auditor.trials import (Curved, Diagnosed, Outcome, Placeable, Screened, Trial, curves_of, mechanism_of,
                            placed_on, screens_of)


def _stored(outcome: Outcome, *, legacy: bool) -> dict:
    """The outcome as the store keeps it (JSON, NaN as null); ``legacy``: as versions before
    ``extras`` wrote it, with the SSM's effective rank beside the generic fields."""
    d = outcome.to_dict()
    if legacy:
        d = {k: v for k, v in d.items() if k != "extras"} | {"effective_rank": outcome.extra("effective_rank")}
    text = json.dumps(d).replace("NaN", "null")
    return json.loads(text)


def test_an_outcome_round_trips_with_its_extras_and_nan_as_null():
    out = Outcome(key="k", error=math.nan, train_loss=0.1, converged=False, steps=7,
                  extras={"effective_rank": 2.5, "hankel_rank": math.nan})
    back = Outcome.from_dict(_stored(out, legacy=False))
    assert back.key == "k" and math.isnan(back.error) and back.train_loss == 0.1 and back.steps == 7
    assert back.extras["effective_rank"] == 2.5 and math.isnan(back.extra("hankel_rank"))
    assert math.isnan(back.extra("absent")) and math.isnan(back.extra(None))
    bare = Outcome(key="b", error=1.0, train_loss=0.0, converged=True, steps=1)
    assert Outcome.from_dict(_stored(bare, legacy=False)) == bare and bare.extras == {}


def test_outcomes_stored_before_extras_existed_load_and_resume_without_retraining():
    data = make_benchmark(BenchmarkSpec(kind="standalone", n=40, poison_fraction=0.1, length=6, seed=3))
    dataset = validate_arrays(data)
    config = AuditConfig(seed=1)
    pairs: list[tuple[Trial, Outcome]] = []
    first = run_audit(dataset, config, store=pairs.extend)
    assert pairs and all("effective_rank" in o.extras for _, o in pairs)
    legacy = {o.key: Outcome.from_dict(_stored(o, legacy=True)) for _, o in pairs}
    assert all(legacy[o.key].extra("effective_rank") == o.extra("effective_rank") for _, o in pairs)

    class Counting(InlineExecutor):
        trained = 0

        def run(self, trials):
            Counting.trained += len(trials)
            yield from super().run(trials)

    again = run_audit(dataset, config, executor=Counting(build_problem(dataset, config)), outcomes=legacy,
                      screens=first.screens)
    assert Counting.trained == 0                                 # every trial came from the store
    assert again.verdict.flagged == first.verdict.flagged
    assert again.verdict.confirmation["p_value"] == first.verdict.confirmation["p_value"]


class _Bare:
    """The narrowest problem: n, metric and run. Example 2 multiplies the error of every
    model trained with it by 6 (with seed noise)."""

    n = 12
    metric = "a made-up error"

    def run(self, trials):
        return [Outcome(key=t.key, error=float((6.0 if t.mask[2] else 1.0) * np.exp(0.05 * np.sin(7 * t.seed + t.mask.sum()))),
                        train_loss=0.0, converged=True, steps=1) for t in trials]


def test_optional_capabilities_are_separate_protocols():
    bare = _Bare()
    assert not isinstance(bare, (Screened, Diagnosed, Curved, Placeable))
    assert screens_of(bare, seed=0) == ({}, ()) and mechanism_of(bare) is None
    assert curves_of(bare, [1], seed=0) == {} and placed_on(bare, "cuda:0") is bare
    dataset = validate_arrays(make_benchmark(BenchmarkSpec(kind="standalone", n=20, length=5, seed=1)))
    ssm = build_problem(dataset, AuditConfig())
    assert isinstance(ssm, Screened) and isinstance(ssm, Diagnosed) and isinstance(ssm, Curved)
    assert mechanism_of(ssm) == "effective_rank" and placed_on(ssm, "cpu") is ssm


def test_the_narrowest_problem_audits():
    """An audit needs nothing beyond n, metric and run: no screens, no mechanism, no curves."""
    context = search_context(_Bare(), {}, config=AuditConfig(), budget=10)
    assert context.n == 12 and context.screen is None and context.mechanism is None
    rng = np.random.default_rng(0)
    dataset = validate_arrays({"x": rng.normal(size=(12, 4)), "y": rng.normal(size=12),
                               "x_val": rng.normal(size=(5, 4)), "y_val": rng.normal(size=5)})
    result = run_audit(dataset, AuditConfig(), executor=InlineExecutor(_Bare()))
    assert result.verdict.flagged == [2] and result.kernels == {} and result.screens == {}
