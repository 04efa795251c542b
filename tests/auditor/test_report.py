import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from auditor.engine import run_audit
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.report import (
    build_report,
    detection_metrics,
    json_safe,
    ranking_metrics,
    render_html,
    status_line,
    write_report,
)

N = 40
CONFIG = AuditConfig(confirm_seeds=6)
GLOSSARY = ("trial", "trusted reference set", "harm", "effective rank of A", "kappa_j", "geometric mean over seeds",
            "confirmation p-value", "control", "rank rise, rank band", "harm without the poisons' mechanism")


@pytest.fixture(scope="module")
def audited():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arrays = make_benchmark(BenchmarkSpec(n=N, poison_fraction=0.1, length=6, seed=0))
        with_truth = validate_arrays(arrays, sha256="ab" * 32)
        without_truth = validate_arrays({k: v for k, v in arrays.items() if k != "is_poison"})
        result = run_audit(with_truth, CONFIG)
    finally:
        torch.set_num_threads(threads)
    return result, with_truth, without_truth


@pytest.fixture(scope="module")
def report(audited):
    result, dataset, _ = audited
    return build_report(result, dataset, CONFIG)


def test_report_is_strict_json(report):
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report


def test_contract_fields(report, audited):
    result, dataset, _ = audited
    assert report["flagged"] == sorted(report["flagged"])
    assert all(type(i) is int and 0 <= i < N for i in report["flagged"])
    assert len(report["scores"]) == N and all(s is None or type(s) is float for s in report["scores"])
    assert report["trials"] == len(result.outcomes) and type(report["trials"]) is int
    assert report["unconverged"] == sum(not o.converged for o in result.outcomes.values())
    gen = report["generalization"]
    assert gen["metric"] == result.metric
    for name in ("with_all",) + (("without_flagged", "without_random") if report["confirmation"]["tested"] else ()):
        assert set(gen[name]) == {"geomean", "ci95", "errors", "extras"}
        assert len(gen[name]["ci95"]) == 2 and len(gen[name]["errors"]) == len(report["confirmation"]["seeds"])
    conf = report["confirmation"]
    assert type(conf["confirmed"]) is bool and conf["seeds"] == result.verdict.confirmation["seeds"]
    assert CONFIG.confirm_seeds <= len(conf["seeds"]) <= 2 * CONFIG.confirm_seeds
    if report["flagged"]:
        assert conf["confirmed"] and 0 <= conf["p_value"] <= 1 and len(conf["effect_ci95"]) == 2
        assert "without_flagged" in report["kernels"]
    assert set(report["screens"]) == set(result.screens)
    assert all(len(v) == N for v in report["screens"].values())
    assert report["strategy"] == result.strategy and report["budget"] == result.budget
    rep = report["reproduce"]
    assert rep["dataset_sha256"] == "ab" * 32 and rep["dataset"] == dataset.summary()
    assert rep["config"] == CONFIG.model_dump(mode="json")
    assert set(rep["versions"]) >= {"auditor", "torch", "numpy", "scipy", "scikit-learn", "python"}
    assert all(rep["versions"][name] for name in ("numpy", "scipy", "scikit-learn"))
    assert isinstance(report["status_line"], str) and str(N) in report["status_line"]


def test_evaluation_only_with_ground_truth(report, audited):
    result, dataset, without_truth = audited
    ev = report["evaluation"]
    truth = dataset.is_poison
    assert ev["poisons"] == [int(i) for i in np.flatnonzero(truth)]
    assert ev == json.loads(json.dumps(ev))
    expected = detection_metrics(flagged=report["flagged"], is_poison=truth)
    assert ev["precision"] == expected["precision"] and ev["recall"] == expected["recall"]
    assert 0 <= ev["auroc"] <= 1
    assert set(ev["baselines"]) == set(result.screens)
    for b in ev["baselines"].values():
        assert set(b) == {"auroc", "precision_at_k", "recall_at_k"}
    blind = build_report(result, without_truth, CONFIG)
    assert "evaluation" not in blind
    assert blind["reproduce"]["dataset_sha256"] is None
    json.dumps(blind, allow_nan=False)


def test_detection_metrics_hand_made():
    truth = np.zeros(10, bool)
    truth[[1, 2, 3, 4]] = True
    m = detection_metrics(flagged=[1, 2, 7], is_poison=truth)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 4)
    assert m["true_positives"] == 2 and m["n_flagged"] == 3 and m["n_poisons"] == 4
    none = detection_metrics(flagged=[], is_poison=truth)
    assert none["precision"] is None and none["recall"] == 0
    clean = detection_metrics(flagged=[0], is_poison=np.zeros(10, bool))
    assert clean["precision"] == 0 and clean["recall"] is None


def test_ranking_metrics_hand_made():
    truth = np.array([True, True, False, False, False])
    perfect = ranking_metrics(scores=[5.0, 4.0, 1.0, 0.0, -1.0], is_poison=truth)
    assert perfect["auroc"] == 1.0 and perfect["precision_at_k"] == 1.0 and perfect["k"] == 2
    half = ranking_metrics(scores=[5.0, float("nan"), 4.0, 0.0, -1.0], is_poison=truth)
    assert half["precision_at_k"] == 0.5 and half["recall_at_k"] == 0.5
    assert half["auroc"] == pytest.approx(3 / 6)                # nan ranks lowest
    assert ranking_metrics(scores=[1.0, 2.0], is_poison=np.zeros(2, bool))["auroc"] is None


def test_json_safe_handles_numpy_and_non_finite():
    obj = {1: np.float32(2.5), "a": np.array([1.0, np.inf, np.nan]), "b": (np.int64(3), np.bool_(True)),
           "c": float("-inf")}
    assert json_safe(obj) == {"1": 2.5, "a": [1.0, None, None], "b": [3, True], "c": None}


def test_status_line_variants(report):
    unconfirmed = {**report, "flagged": [],
                   "confirmation": {**report["confirmation"], "tested": [1, 2], "confirmed": False,
                                    "harm_confirmed": False, "p_value": 0.2, "error_ratio": 1.5,
                                    "effect_ci95": [-0.1, 0.9]}}
    assert status_line(unconfirmed, n=N).startswith("No harmful examples confirmed")
    natural = {**unconfirmed, "confirmation": {**unconfirmed["confirmation"], "harm_confirmed": True,
                                               "p_value": 0.001, "error_ratio": 9.0, "rank_drop": -0.03,
                                               "p_value_rank": 0.9}}
    line = status_line(natural, n=N)
    assert line.startswith("No poisons confirmed: removing 2 candidate(s) lowers") and "9x" in line
    assert "not the effective rank of A (change -0.03, p = 0.9)" in line
    tail = {**unconfirmed, "confirmation": {"confirmed": False, "tested": [], "seeds": [1, 2]},
            "details": {"without_mechanism": [4, 7, 9]}}
    line = status_line(tail, n=N)
    assert line.startswith(f"No poisons found among {N} examples: the search found 3 whose presence raises")
    nothing = {**unconfirmed, "confirmation": {"confirmed": False, "tested": [], "seeds": [1, 2]},
               "details": {"reason": "no removal helped"}}
    assert "no removal helped" in status_line(nothing, n=N)
    flagged = {**report, "flagged": [3], "confirmation": {**report["confirmation"], "tested": [3],
                                                          "p_value": 0.002, "error_ratio": 7.9,
                                                          "effect_ci95": [1.0, 3.0]}}
    line = status_line(flagged, n=100)
    assert line.startswith("1 of 100 examples flagged") and "7.9x" in line and "p = 0.002" in line
    assert "budget" not in line and "max_steps" not in line
    slow = {**flagged, "trials": 40, "unconverged": 7}
    assert "40 models trained, 7 of them stopped at max_steps before fitting" in status_line(slow, n=100)
    short = {**flagged, "budget": 232, "details": {"budget": "exhausted while testing: groups left whole"}}
    assert ("the search budget of 232 models was exhausted while testing: groups left whole; a larger budget"
            in status_line(short, n=100))


def test_html_is_self_contained_and_escaped(report, tmp_path):
    evil = "<script>alert('x')</script>"
    hostile = {**report, "status_line": evil, "details": {**report["details"], "reason": evil}}
    page = render_html(hostile)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert page.count('<img src="data:image/png;base64,') >= 4          # scores, kernels, generalization, ROC
    assert len(page.encode()) < 1_000_000
    for heading in ("Per-example scores", "Impulse responses", "Generalization", "Baselines", "Reproduce"):
        assert heading in page

    write_report(report, json_path=tmp_path / "r.json", html_path=tmp_path / "r.html")
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_html_without_evaluation(audited):
    result, _, without_truth = audited
    page = render_html(build_report(result, without_truth, CONFIG))
    assert "Against ground truth" not in page and "Reproduce" in page


def test_html_large_n_stays_small():
    n = 1000
    rng = np.random.default_rng(0)
    poisons = sorted(rng.choice(n, 50, replace=False).tolist())
    scores = rng.normal(size=n).tolist()
    report = {
        "flagged": poisons[:40], "scores": scores, "trials": 300, "strategy": "group", "budget": 220,
        "generalization": {"metric": "trusted-set relative error",
                           "with_all": {"geomean": 2.0, "ci95": [1.0, 4.0], "errors": [1.5, 2.5],
                                        "extras": {"effective_rank": 9.0}},
                           "without_flagged": {"geomean": 0.2, "ci95": [0.1, 0.4], "errors": [0.2, 0.2],
                                               "extras": {"effective_rank": 3.0}}},
        "confirmation": {"confirmed": True, "p_value": 0.01, "error_ratio": 10.0, "effect_ci95": [1.0, 3.0],
                         "seeds": [1000, 1001], "tested": poisons[:40]},
        "evaluation": {"precision": 1.0, "recall": 0.8, "auroc": 0.7, "precision_at_k": 0.6, "recall_at_k": 0.6,
                       "k": 50, "poisons": poisons, "true_positives": 40, "n_flagged": 40, "n_poisons": 50,
                       "baselines": {f"s{i}": {"auroc": 0.5, "precision_at_k": 0.1, "recall_at_k": 0.1}
                                     for i in range(5)}},
        "screens": {f"s{i}": rng.normal(size=n).tolist() for i in range(5)},
        "kernels": {"with_all": np.exp(-np.arange(160) / 30).tolist(),
                    "without_flagged": np.exp(-np.arange(160) / 5).tolist()},
        "details": {}, "seconds": 12.0, "reproduce": {}, "status_line": "x",
    }
    assert len(render_html(report).encode()) < 1_000_000


def _check_records(report, dataset, *, rank_is_bias=True):
    """The evidence agrees with the verdict, the dataset and the strategies' own rules."""
    records = {r["index"]: r for r in report["evidence"]}
    flagged = [i for i, r in records.items() if r["role"] == "flagged"]
    assert flagged == report["flagged"]
    apart = sorted(i for i, r in records.items() if r["role"] == "without_mechanism")
    assert apart == sorted(report["details"].get("without_mechanism", []))
    for i, r in records.items():
        assert np.array_equal(np.asarray(r["sequence"]), dataset.x[i])
        assert r["is_poison"] == bool(dataset.is_poison[i]) and r["label"] == pytest.approx(float(dataset.y[i]))
        seeds = len(r["seeds"])
        assert len(r["harm_log"]) == len(r["harm_ratio"]) == len(r["rank_rise"]) == len(r["rank_band"]) == seeds
        assert r["harm_ratio"] == pytest.approx([math.exp(h) for h in r["harm_log"]])
        assert r["harm_ratio_mean"] == pytest.approx(math.exp(np.mean(r["harm_log"])))
        assert r["decided_by"] and r["group_size"] >= 1
        shows = all(rise > band for rise, band in zip(r["rank_rise"], r["rank_band"]))
        if rank_is_bias:                                 # flagged exactly where the mechanism showed
            assert shows == (r["role"] == "flagged") or r["test"] == "core_weaker", r
    return records


def test_evidence_of_every_singled_out_example(report, audited):
    _, dataset, _ = audited
    assert report["evidence_note"] is None and report["flagged"]
    records = _check_records(report, dataset)
    assert {r["test"] for r in records.values()} == {"group_mechanism"}
    assert all(len(r["seeds"]) == 2 and r["harm_ratio_ci95"][0] <= r["harm_ratio_mean"] <= r["harm_ratio_ci95"][1]
               for r in records.values())
    # the flagged raised the error more than the controls did under every seed
    assert all(min(r["harm_ratio"]) > max(r["control_ratio"]) for r in records.values() if r["role"] == "flagged")


def test_evidence_without_the_outcomes_keeps_the_examples(audited):
    result, dataset, _ = audited
    keys = sorted(result.outcomes)
    partial = dataclasses.replace(result, outcomes={k: result.outcomes[k] for k in keys[: len(keys) // 2]})
    report = build_report(partial, dataset, CONFIG)
    assert report["evidence_note"] and "replay" in report["evidence_note"]
    assert [r["index"] for r in report["evidence"] if r["role"] == "flagged"] == report["flagged"]
    assert all("harm_log" not in r and r["sequence"] for r in report["evidence"])
    assert "not available" in render_html(report)


def test_sequence_profile_summarizes_the_others(report, audited):
    _, dataset, _ = audited
    singled = {r["index"] for r in report["evidence"]}
    others = dataset.x[[i for i in range(N) if i not in singled]]
    profile = report["sequence_profile"]
    assert profile["examples"] == len(others)
    np.testing.assert_allclose(profile["median"], np.median(others, axis=0))
    np.testing.assert_allclose(profile["q10"], np.quantile(others, 0.1, axis=0))
    np.testing.assert_allclose(profile["q90"], np.quantile(others, 0.9, axis=0))


def test_html_shows_the_evidence_and_the_glossary(report):
    page = render_html(report)
    for i in report["flagged"]:
        assert f"<b>#{i}</b>" in page
    apart = [r for r in report["evidence"] if r["role"] != "flagged"]
    assert ("Harm without the poisons' mechanism" in page.replace("&#39;", "'")) == bool(apart)
    assert page.count('<img src="data:image/png;base64,') >= 6     # + evidence and sequences
    glossary = page[page.index('id="glossary"'):]
    for term in GLOSSARY:
        assert f"<dt>{term}</dt>" in glossary.replace("&#39;", "'"), term
    evil = "<img src=x onerror=alert(1)>"
    hostile = {**report, "evidence": [{**r, "decided_by": evil, "base": evil} for r in report["evidence"]]}
    page = render_html(hostile)
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_html_many_channels():
    k, channels = 12, 3
    rng = np.random.default_rng(1)
    records = [{"index": i, "role": role, "score": 1.0, "label": 0.5, "sequence": rng.normal(size=(k, channels)).tolist()}
               for i, role in ((2, "flagged"), (5, "without_mechanism"))]
    report = {"flagged": [2], "scores": [0.0] * 8, "evidence": records, "evidence_note": "not replayed",
              "sequence_profile": {"examples": 6, "median": np.zeros((k, channels)).tolist(),
                                   "q10": (-np.ones((k, channels))).tolist(), "q90": np.ones((k, channels)).tolist()},
              "confirmation": {}, "generalization": {}, "details": {}, "reproduce": {}, "status_line": "x"}
    page = render_html(report)
    assert page.count('<img src="data:image/png;base64,') == 2     # scores and sequences
    assert "not replayed" in page


@pytest.mark.slow
def test_evidence_of_core_testing():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = AuditConfig(confirm_seeds=6, strategy="core")
        dataset = validate_arrays(make_benchmark(BenchmarkSpec(n=150, poison_fraction=0.1, length=6, seed=0)))
        result = run_audit(dataset, config)
    finally:
        torch.set_num_threads(threads)
    report = build_report(result, dataset, config)
    assert report["flagged"] and report["evidence_note"] is None
    records = _check_records(report, dataset)
    for r in records.values():
        assert r["test"].startswith("core_") and "core of" in r["base"]
        assert len(r["threshold_ratio"]) == len(r["seeds"]) == result.verdict.details["test_seeds"]
        if r["test"] == "core_alone":                   # past the strategy's threshold under every seed
            assert r["group_size"] == 1 and all(h > t for h, t in zip(r["harm_ratio"], r["threshold_ratio"]))


def test_models_that_did_not_fit_give_no_verdict(tmp_path):
    """Stopped long before fitting, the models say nothing: the verdict is not_fitted, never clean."""
    from auditor.cli.common import EXIT_FAILED
    from auditor.cli.local import audit_file
    from auditor.data import save_dataset

    arrays = make_benchmark(BenchmarkSpec(kind="clean", n=24, length=6, seed=3))
    config = AuditConfig(max_steps=10, confirm_seeds=6)
    result = run_audit(validate_arrays(arrays), config)
    report = build_report(result, validate_arrays(arrays), config)
    assert report["verdict"] == "not_fitted" and report["fit"]["unconverged"] == report["trials"] > 0
    assert report["status_line"].startswith("Training did not fit") and "No harmful" not in report["status_line"]
    assert "training did not fit" in render_html(report)
    save_dataset(tmp_path / "d.npz", **arrays)
    code = audit_file(str(tmp_path / "d.npz"), config, as_json=True, json_path=tmp_path / "r.json", html_path=None)
    assert code == EXIT_FAILED and json.loads((tmp_path / "r.json").read_text())["verdict"] == "not_fitted"


def test_verdict_names():
    from auditor.engine import fit_status
    from auditor.report import verdict_name
    from types import SimpleNamespace

    outs = lambda conv: [SimpleNamespace(converged=c) for c in conv]      # what fit_status reads
    assert verdict_name(fit_status(outs([True, False])), flagged=[]) == "nothing_flagged"   # half: still fitted
    assert verdict_name(fit_status(outs([True, False])), flagged=[1]) == "flagged"
    assert verdict_name(fit_status(outs([True, False, False])), flagged=[1]) == "not_fitted"


def test_report_matches_its_types_and_published_schema(report):
    from pathlib import Path

    from pydantic import ValidationError

    from auditor.report_schema import Report, report_json_schema, same_schema

    typed = Report.model_validate(report)
    assert typed.verdict == report["verdict"] and typed.confirmation.tested == report["confirmation"]["tested"]
    with pytest.raises(ValidationError):                         # the types are strict: a wrong value fails
        Report.model_validate({**report, "verdict": "maybe"})
    with pytest.raises(ValidationError):                         # and so does a field they do not describe
        Report.model_validate({**report, "confirmation": {**report["confirmation"], "unknown": 1}})
    published = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"
    assert same_schema(json.loads(published.read_text(encoding="utf-8")), report_json_schema()), \
        "docs/report.schema.json is stale: auditor report-schema > docs/report.schema.json"
    schema = report_json_schema()                                # the comparison tells a changed schema
    assert not same_schema({**schema, "required": schema["required"][1:]}, schema)
    assert same_schema({"type": "object", "additionalProperties": True}, {"type": "object"})   # the default
    assert not same_schema({"type": "object", "additionalProperties": False}, {"type": "object"})
