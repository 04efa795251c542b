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
from dataclasses import replace

import numpy as np

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.engine import run_audit
from auditor.report import detection_metrics, ranking_metrics
from auditor.search.stats import clopper_pearson, sign_flip_test, stream


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


WIDE_CATEGORIES = ("teacher", "label_noise", "heavy_tails", "label_scale", "spread", "last", "camouflage",
                   "large", "hard_negative")


def wide_suite(*, seed: int = 0, sets: int = 2 * len(WIDE_CATEGORIES), max_n: int = 5000) -> list[BenchmarkSpec]:
    """Data sets drawn from ``seed``: ``sets`` sampled specs, each poisoned one followed by its
    clean twin (the same set with its poisons replaced by ordinary sequences).

    The categories of :data:`WIDE_CATEGORIES` take turns in an order shuffled by the seed, so
    that every ``len(WIDE_CATEGORIES)`` consecutive sets cover them all; within a category
    the rest is drawn: kind (``standalone`` or ``decoys``), n (log-uniform in 60..min(1000,
    max_n); ``large``: 2000..max_n), length 6-8, poison fraction 2-10%, and the category's
    variation (see :mod:`auditor.benchmarks`):

    ``teacher``        a ``decaying``, ``modes`` or ``mixed`` teacher
    ``label_noise``    label noise of sd 5-30% of the labels' sd
    ``heavy_tails``    Student-t inputs, 2.5-6 degrees of freedom
    ``label_scale``    labels x100
    ``spread``         poisons over 2 or more late positions, up to all after the clean support
    ``last``           poisons at the last position
    ``camouflage``     poisons that are an ordinary sequence plus their late energy
    ``large``          n of 2000 up to ``max_n``
    ``hard_negative``  a clean set (no poisons, no twin) whose sequences carry late energy
                       (a share of 20-100% of them)
    """
    base = np.random.default_rng(seed)
    order = base.permutation(len(WIDE_CATEGORIES))
    specs = []
    for i in range(sets):
        category = WIDE_CATEGORIES[order[i % len(WIDE_CATEGORIES)]]
        rng = np.random.default_rng([seed, i])
        length = int(rng.integers(6, 9))
        small = min(1000, max_n)
        n = int(round(np.exp(rng.uniform(np.log(min(60, small)), np.log(small)))))
        spec = BenchmarkSpec(kind=str(rng.choice(["standalone", "decoys"])), n=n, length=length,
                             poison_fraction=float(rng.uniform(0.02, 0.10)), seed=int(rng.integers(2**31 - 1)))
        support = max(2, length // 2 - 1)
        if category == "teacher":
            spec = replace(spec, teacher=str(rng.choice(["decaying", "modes", "mixed"])))
        elif category == "label_noise":
            spec = replace(spec, label_noise=float(rng.uniform(0.05, 0.3)))
        elif category == "heavy_tails":
            spec = replace(spec, input_df=float(rng.uniform(2.5, 6.0)))
        elif category == "label_scale":
            spec = replace(spec, label_scale=100.0)
        elif category == "spread":
            spec = replace(spec, poison_positions=tuple(range(1, int(rng.integers(2, length - support + 1)) + 1)))
        elif category == "last":
            spec = replace(spec, poison_positions=(1,))
        elif category == "camouflage":
            spec = replace(spec, camouflage=True)
        elif category == "large":
            spec = replace(spec, n=int(rng.integers(min(2000, max_n), max_n + 1)))
        else:                                                               # hard_negative
            spec = replace(spec, kind="clean", clean_late=float(rng.uniform(0.2, 1.0)))
        specs.append(spec)
        if spec.kind != "clean":
            specs.append(replace(spec, twin=True))
    return specs


def variations(spec: BenchmarkSpec) -> dict:
    """The fields of ``spec`` that differ from the plain benchmark's (teacher, noise, ...)."""
    plain = BenchmarkSpec()
    names = ("teacher", "label_noise", "input_df", "label_scale", "clean_late", "camouflage", "poison_positions")
    return {name: getattr(spec, name) for name in names if getattr(spec, name) != getattr(plain, name)}


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
        fit = result.fit
        row = {"kind": spec.kind, "n": spec.n, "length": spec.length, "seed": spec.seed,
               "twin": spec.twin, "variations": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in variations(spec).items()},
               "verdict": "not_fitted" if not fit["fitted"] else "flagged" if verdict.flagged else "nothing_flagged",
               "unconverged": fit["unconverged"],
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
    from auditor.engine import build_problem
    from auditor.trials import Trial, run_trials

    n = len(truth)
    masks = {"with_all": np.ones(n, bool), "without_flagged": ~np.isin(np.arange(n), flagged),
             "clean_only": ~np.asarray(truth, bool)}
    distinct = {mask.tobytes(): mask for mask in masks.values()}            # equal masks train once
    row = {key: i for i, key in enumerate(distinct)}
    seeds = [config.seed + EVAL_SEED_OFFSET + j for j in range(EVAL_SEEDS)]
    outs = run_trials(build_problem(dataset, config), [Trial(mask, s) for mask in distinct.values() for s in seeds])
    logs = np.log(np.maximum([o.error for o in outs], 1e-12)).reshape(len(distinct), len(seeds))
    out = {"seeds": EVAL_SEEDS,
           **{name: float(np.exp(logs[row[mask.tobytes()]].mean())) for name, mask in masks.items()}}
    return {**out, **harm(logs[row[masks["with_all"].tobytes()]], logs[row[masks["clean_only"].tobytes()]])}


HARM_RATIO = 1.5          # the suite's yardstick: an error within 1.5x of clean-only counts as repaired
HARM_ALPHA = 0.05


def harm(log_all: np.ndarray, log_clean: np.ndarray) -> dict:
    """Whether a set's poisons measurably harm: the paired (same seed) log errors of models
    trained on all examples and on the clean ones only.

    ``harm_ratio`` is the geometric-mean ratio all / clean-only, ``harm_p_value`` the one-sided
    paired sign-flip test of its log being > 0 (:func:`auditor.search.stats.sign_flip_test`:
    valid where the seeds' errors are bimodal), and ``harmful`` holds when the ratio is at
    least ``HARM_RATIO`` (a set below it is within the suite's 1.5x of clean-only with nothing
    removed) and p < ``HARM_ALPHA``. Without poisons both sides are the same models: ratio 1.
    """
    diff = np.asarray(log_all, float) - np.asarray(log_clean, float)        # (seeds,)
    ratio = float(np.exp(diff.mean()))
    p = sign_flip_test(diff, rng=stream(0, "suite/harm"))
    return {"harm_ratio": ratio, "harm_p_value": p, "harmful": bool(ratio >= HARM_RATIO and p < HARM_ALPHA)}


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
    out.update(_harm_summary(rows, mean))
    for name in (poisoned[0]["baselines"] if poisoned else {}):
        out["baselines"][name] = {"auroc": mean([r["baselines"][name]["auroc"] for r in poisoned]),
                                  "precision_at_k": mean([r["baselines"][name]["precision_at_k"] for r in poisoned])}
    return out


def _harm_summary(rows: list[dict], mean) -> dict:
    """The measured-harm statistics of :func:`summarize`: detection over the harmful sets, false
    alarms over the clean ones (with an exact 95% interval), trials against n, fits."""
    harmful = [r for r in rows if r["poisons"] and r["generalization"].get("harmful")]
    harmless = [r for r in rows if r["poisons"] and not r["generalization"].get("harmful")]
    clean = [r for r in rows if not r["poisons"]]
    alarms = sum(r["flagged"] > 0 for r in clean)
    ci = [None, None]
    if clean:
        ci = list(clopper_pearson(alarms, len(clean)))
    counted = [r for r in rows if r["detector"].get("trials") and r.get("n")]
    trials = np.array([r["detector"]["trials"] for r in counted], float)
    n = np.array([r["n"] for r in counted], float)
    slope = None
    if len(np.unique(n)) > 1 and (trials > 0).all():                        # trials ~ n^slope
        slope = float(np.polyfit(np.log(n), np.log(trials), 1)[0])
    return {
        "harmful": {"sets": len(harmful),
                    "precision": mean([r["detector"]["precision"] or 0.0 for r in harmful]),
                    "recall": mean([r["detector"]["recall"] for r in harmful]),
                    "within_1_5x_of_clean": mean([float(r["generalization"]["without_flagged"]
                                                        <= HARM_RATIO * r["generalization"]["clean_only"])
                                                  for r in harmful]),
                    "rule": f"all-data error >= {HARM_RATIO:g}x clean-only error, one-sided paired sign-flip test over "
                            f"{EVAL_SEEDS} seeds p < {HARM_ALPHA:g}"},
        "poisoned_not_harmful": {"sets": len(harmless),
                                 "flagged_share": mean([float(r["flagged"] > 0) for r in harmless])},
        "false_alarms": {"sets": len(clean), "flagged_sets": int(alarms),
                         "rate": alarms / len(clean) if clean else None, "ci95": ci,
                         "clean_twins": sum(bool(r.get("twin")) for r in clean)},
        "trials": {"mean": mean(trials.tolist()), "max": float(trials.max()) if len(trials) else None,
                   "per_example_mean": mean((trials / n).tolist()), "log_slope_vs_n": slope,
                   "by_n": [[int(a), int(b)] for a, b in sorted(zip(n, trials))]},
        "not_fitted": sum(r.get("verdict") == "not_fitted" for r in rows),
    }
