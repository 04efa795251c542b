import numpy as np
import pytest

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.suite import EVAL_SEEDS, generalization, summarize


def test_generalization_compares_the_verdict_with_the_clean_examples_alone():
    data = make_benchmark(BenchmarkSpec(kind="standalone", n=40, poison_fraction=0.1, length=6, seed=1))
    truth = data["is_poison"]
    dataset = validate_arrays(data)
    config = AuditConfig()
    exact = generalization(dataset, truth, [int(i) for i in np.flatnonzero(truth)], config)
    assert exact["seeds"] == EVAL_SEEDS
    assert exact["without_flagged"] == exact["clean_only"]                  # the same models
    assert exact["with_all"] > 3 * exact["clean_only"]                      # the poisons do harm
    assert exact["harmful"] and exact["harm_ratio"] > 3 and exact["harm_p_value"] < 0.05
    none = generalization(dataset, truth, [], config)
    assert none["without_flagged"] == none["with_all"] == exact["with_all"]


def test_summary_counts_a_set_within_1_5x_of_clean_only():
    def row(poisons, flagged, after, clean):
        return {"poisons": poisons, "flagged": flagged,
                "detector": {"precision": 1.0 if flagged else None, "recall": 1.0 if poisons else None,
                             "auroc": 1.0}, "baselines": {},
                "generalization": {"with_all": 1.0, "without_flagged": after, "clean_only": clean}}

    summary = summarize([row(3, 3, 0.14, 0.1), row(3, 3, 0.16, 0.1), row(0, 0, 0.1, 0.1), row(0, 2, 0.1, 0.1)])
    assert summary["within_1_5x_of_clean"] == 0.5
    assert summary["clean_without_flags"] == 0.5


def test_wide_suite_covers_every_category_and_pairs_poisoned_sets_with_twins():
    from dataclasses import replace

    from auditor.suite import WIDE_CATEGORIES, variations, wide_suite

    specs = wide_suite(seed=3, sets=len(WIDE_CATEGORIES), max_n=3000)
    assert specs == wide_suite(seed=3, sets=len(WIDE_CATEGORIES), max_n=3000)      # drawn from the seed
    assert specs != wide_suite(seed=4, sets=len(WIDE_CATEGORIES), max_n=3000)
    poisoned = [s for s in specs if s.kind != "clean" and not s.twin]
    assert len(poisoned) == len(WIDE_CATEGORIES) - 1 and len(specs) == 2 * len(poisoned) + 1
    for i, spec in enumerate(specs):
        if spec in poisoned:
            assert specs[i + 1] == replace(spec, twin=True)
    seen = [variations(s) for s in specs]
    assert {v.get("teacher") for v in seen} & {"decaying", "modes", "mixed"}
    assert any("label_noise" in v for v in seen) and any("input_df" in v for v in seen)
    assert any(v.get("label_scale") == 100.0 for v in seen) and any(v.get("camouflage") for v in seen)
    assert any(v.get("poison_positions") == (1,) for v in seen)
    assert any(len(v.get("poison_positions", ())) >= 2 for v in seen)
    assert any(s.kind == "clean" and s.clean_late > 0 for s in specs)
    assert max(s.n for s in specs) >= 2000 and all(s.n <= 3000 for s in specs)
    for spec in specs:
        make_benchmark(spec)                                                # every drawn spec builds


def test_summary_reports_measured_harm_false_alarms_and_trials():
    def row(poisons, flagged, after, clean, harmful, n=100, twin=False):
        return {"poisons": poisons, "flagged": flagged, "n": n, "twin": twin, "verdict": "nothing_flagged",
                "detector": {"precision": 1.0 if flagged else None, "recall": (1.0 if flagged else 0.0) if poisons
                             else None, "auroc": 1.0, "trials": n // 2}, "baselines": {},
                "generalization": {"with_all": 1.0, "without_flagged": after, "clean_only": clean,
                                   "harmful": harmful}}

    rows = [row(3, 3, 0.1, 0.1, True), row(3, 0, 1.0, 0.1, True, n=400), row(3, 0, 0.1, 0.1, False),
            row(0, 0, 0.1, 0.1, False, twin=True), row(0, 2, 0.1, 0.1, False, twin=True), row(0, 0, 0.1, 0.1, False)]
    summary = summarize(rows)
    assert summary["harmful"]["sets"] == 2 and summary["harmful"]["recall"] == 0.5
    assert summary["harmful"]["precision"] == 0.5 and summary["harmful"]["within_1_5x_of_clean"] == 0.5
    assert summary["poisoned_not_harmful"] == {"sets": 1, "flagged_share": 0.0}
    alarms = summary["false_alarms"]
    assert alarms["sets"] == 3 and alarms["flagged_sets"] == 1 and alarms["clean_twins"] == 2
    assert alarms["rate"] == 1 / 3 and 0.008 < alarms["ci95"][0] < 0.009 and 0.90 < alarms["ci95"][1] < 0.91
    assert summary["trials"]["log_slope_vs_n"] == pytest.approx(1.0) and summary["trials"]["per_example_mean"] == 0.5


def test_harm_is_measured_by_a_paired_test():
    from auditor.suite import harm

    rng = np.random.default_rng(0)
    clean = rng.normal(-3, 1, 32)
    assert harm(clean + np.log(3) + rng.normal(0, 0.3, 32), clean)["harmful"]
    assert not harm(clean + np.log(1.2) + rng.normal(0, 0.3, 32), clean)["harmful"]       # too small
    assert not harm(clean + np.log(3) + rng.normal(0, 8, 32), clean)["harmful"]           # too noisy
    assert harm(clean, clean) == {"harm_ratio": 1.0, "harm_p_value": 1.0, "harmful": False}
