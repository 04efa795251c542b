import numpy as np

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
