"""The detection benchmark: a suite of generated data sets, audited and scored.

Each row audits one data set with the default strategy and reports, beside it, every
screen used alone as a detector (the baselines): precision and recall (the screens flag
their top k, k = the number of poisons, so for them precision = recall), AUROC, models
trained and seconds; and the generalization the verdict buys: the trusted-set error of
models trained on all examples, without the flagged ones and on the clean ones only, over
``EVAL_SEEDS`` evaluation seeds of their own (:func:`generalization`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from auditor.audit import run_audit
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.report import detection_metrics, ranking_metrics


def default_suite() -> list[BenchmarkSpec]:
    """16 data sets: kinds x seeds, n 40..1000, 1-10% poisons, lengths 6-8, decoys, clean."""
    S = BenchmarkSpec
    return [
        S("standalone", n=40, poison_fraction=0.05, length=6, seed=100),
        S("standalone", n=100, poison_fraction=0.10, length=7, seed=101),
        S("standalone", n=200, poison_fraction=0.05, length=8, seed=102),
        S("standalone", n=300, poison_fraction=0.10, length=6, seed=103),
        S("standalone", n=500, poison_fraction=0.02, length=7, seed=104),
        S("standalone", n=1000, poison_fraction=0.01, length=6, seed=105),
        S("standalone", n=1000, poison_fraction=0.05, length=7, seed=106),
        S("decoys", n=100, poison_fraction=0.05, length=6, seed=107),
        S("decoys", n=300, poison_fraction=0.05, length=7, seed=108),
        S("decoys", n=600, poison_fraction=0.03, length=8, seed=109),
        S("decoys", n=1000, poison_fraction=0.02, length=6, seed=110),
        S("clean", n=100, length=6, seed=111),
        S("clean", n=300, length=7, seed=112),
        S("clean", n=500, length=8, seed=113),
        S("clean", n=1000, length=6, seed=114),
        S("standalone", n=60, poison_fraction=0.10, length=8, seed=115),
    ]


def quick_suite() -> list[BenchmarkSpec]:
    """A 4-set subset for a fast look (about a minute on 2 cores)."""
    S = BenchmarkSpec
    return [S("standalone", n=100, poison_fraction=0.05, length=6, seed=200),
            S("decoys", n=100, poison_fraction=0.05, length=7, seed=201),
            S("clean", n=100, length=6, seed=202),
            S("standalone", n=200, poison_fraction=0.10, length=8, seed=203)]


def run_suite(specs: list[BenchmarkSpec], *, config: AuditConfig | None = None,
              on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Audit every data set of ``specs``; one result row per data set (see module doc)."""
    rows = []
    for spec in specs:
        arrays = make_benchmark(spec)
        truth = arrays["is_poison"]
        dataset = validate_arrays(arrays)
        spec_config = audit_config(spec, config)
        start = time.perf_counter()
        result = run_audit(dataset, spec_config)
        seconds = time.perf_counter() - start
        verdict = result.verdict
        row = {"kind": spec.kind, "n": spec.n, "length": spec.length, "seed": spec.seed,
               "poisons": int(truth.sum()), "flagged": len(verdict.flagged),
               "detector": {**detection_metrics(flagged=verdict.flagged, is_poison=truth),
                            "auroc": ranking_metrics(scores=verdict.scores, is_poison=truth)["auroc"],
                            "trials": len(result.outcomes), "seconds": round(seconds, 1)},
               "generalization": generalization(dataset, truth, verdict.flagged, spec_config),
               "baselines": {name: {**ranking_metrics(scores=s, is_poison=truth), "trials": 1}
                             for name, s in result.screens.items()}}
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def audit_config(spec: BenchmarkSpec, config: AuditConfig | None = None) -> AuditConfig:
    """``config`` (default: the defaults) with the student that fits the benchmark's teacher:
    the SSM with its ReLU MLP for ``network`` sets, as their owner would audit them."""
    config = config or AuditConfig()
    return config.model_copy(update={"model": "network" if spec.kind == "network" else "ssm"})


EVAL_SEEDS = 32           # seeds of the generalization check; the training's error is bimodal
                          # (measured, decoys n = 1000 seed 110: models of the clean examples
                          # alone end at 0.015 or 0.125), so that the geometric mean over 6 seeds
                          # came out 0.044 and 0.088 on two sets of 6 seeds: no measure for 1.5x
EVAL_SEED_OFFSET = 10_000  # evaluation seeds are config.seed + this + j: none of the audit's


def generalization(dataset, truth: np.ndarray, flagged: list[int], config: AuditConfig) -> dict:
    """Geometric-mean trusted-set error of models trained on all examples (``with_all``),
    without the ``flagged`` ones (``without_flagged``) and on the clean ones only
    (``clean_only``), each over the same ``EVAL_SEEDS`` seeds (ground truth is read here,
    for evaluation only)."""
    from auditor.audit import build_problem
    from auditor.trials import Trial, run_trials

    n = len(truth)
    masks = {"with_all": np.ones(n, bool), "without_flagged": ~np.isin(np.arange(n), flagged),
             "clean_only": ~np.asarray(truth, bool)}
    distinct = {mask.tobytes(): mask for mask in masks.values()}            # equal masks train once
    row = {key: i for i, key in enumerate(distinct)}
    seeds = [config.seed + EVAL_SEED_OFFSET + j for j in range(EVAL_SEEDS)]
    outs = run_trials(build_problem(dataset, config), [Trial(mask, s) for mask in distinct.values() for s in seeds])
    logs = np.log(np.maximum([o.error for o in outs], 1e-12)).reshape(len(distinct), len(seeds))
    return {"seeds": EVAL_SEEDS,
            **{name: float(np.exp(logs[row[mask.tobytes()]].mean())) for name, mask in masks.items()}}


def summarize(rows: list[dict]) -> dict:
    """Means over the suite: precision and recall over poisoned sets, the clean sets'
    no-flag rate, and how often the error after removal is within 1.5x of clean-only."""
    poisoned = [r for r in rows if r["poisons"]]
    clean = [r for r in rows if not r["poisons"]]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    within = [r["generalization"]["without_flagged"] <= 1.5 * r["generalization"]["clean_only"] for r in poisoned]
    out = {"precision": mean([r["detector"]["precision"] or 0.0 for r in poisoned]),
           "recall": mean([r["detector"]["recall"] for r in poisoned]),
           "auroc": mean([r["detector"]["auroc"] for r in poisoned]),
           "clean_without_flags": mean([float(r["flagged"] == 0) for r in clean]),
           "within_1_5x_of_clean": mean([float(w) for w in within]),
           "baselines": {}}
    for name in (poisoned[0]["baselines"] if poisoned else {}):
        out["baselines"][name] = {"auroc": mean([r["baselines"][name]["auroc"] for r in poisoned]),
                                  "precision_at_k": mean([r["baselines"][name]["precision_at_k"] for r in poisoned])}
    return out
