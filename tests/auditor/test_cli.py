import json
import subprocess
import sys


def _auditor(*args):
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True, timeout=300)


def test_reproduce_json_contract():
    out = _auditor("reproduce", "--setting", "theory", "--length", "7", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for field in ("setting", "length", "state_dim", "seeds", "clean_errors", "poisoned_errors",
                  "clean_error", "poisoned_error", "paper"):
        assert field in r
    assert r["paper"] == {"clean": 0.00127, "poisoned": 0.0501} and r["state_dim"] == 10


def test_reproduce_table_and_bad_length():
    out = _auditor("reproduce", "--setting", "theory", "--length", "7")
    assert out.returncode == 0 and "paper" in out.stdout
    bad = _auditor("reproduce", "--setting", "theory", "--length", "8")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "known" in bad.stderr


def test_bench_train_json_contract():
    out = _auditor("bench", "train", "--models", "16", "--epochs", "20", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["models"] == 16 and r["epochs"] == 20 and r["seconds"] > 0 and r["models_per_second"] > 0


def test_make_benchmark_then_audit_json(tmp_path):
    data = tmp_path / "b.npz"
    out = _auditor("make-benchmark", "--kind", "standalone", "--n", "40", "--out", str(data), "--seed", "1")
    assert out.returncode == 0, out.stderr
    html = tmp_path / "r.html"
    out = _auditor("audit", str(data), "--json", "--confirm-seeds", "3", "--html", str(html))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for field in ("flagged", "scores", "trials", "generalization", "evaluation"):
        assert field in report
    assert len(report["scores"]) == 40 and report["trials"] > 0
    assert {"precision", "recall"} <= set(report["evaluation"])
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_bad_files_are_one_line_errors(tmp_path):
    cases = {"not.npz": b"hello", "empty.npz": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    import numpy as np
    np.savez(tmp_path / "nan.npz", x=np.full((3, 4), np.nan), y=np.ones(3))
    np.savez(tmp_path / "pickle.npz", x=np.array([{"a": 1}], dtype=object), y=np.ones(1))
    np.savez(tmp_path / "shape.npz", x=np.ones((3, 4)), y=np.ones(5))
    for name in ("not.npz", "empty.npz", "nan.npz", "pickle.npz", "shape.npz", "missing.npz"):
        out = _auditor("audit", str(tmp_path / name))
        assert out.returncode == 2, (name, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("auditor: error:")


def test_bench_detect_quick_json_contract():
    out = _auditor("bench", "detect", "--quick", "--strategy", "group", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert len(r["rows"]) == 4
    assert {"precision", "recall", "auroc", "clean_without_flags", "within_1_5x_of_clean"} <= set(r["summary"])
    assert {"gamma0", "trace_push", "loss_trajectory"} <= set(r["summary"]["baselines"])
    assert all(row["detector"]["trials"] > 0 for row in r["rows"])


def test_strategy_and_model_choices_are_the_config_schema():
    from typing import get_args

    from auditor.cli import CONFIRM_SEEDS, MODEL_CHOICES, STRATEGY_CHOICES
    from auditor.config import AuditConfig, ModelKind, Strategy
    assert set(STRATEGY_CHOICES) == set(get_args(Strategy))
    assert set(MODEL_CHOICES) == set(get_args(ModelKind))
    assert CONFIRM_SEEDS == AuditConfig().confirm_seeds


def test_model_flag_reaches_the_audit_config():
    from auditor.cli import _audit_settings, build_parser
    args = build_parser().parse_args(["submit", "data.npz", "--model", "network"])
    assert _audit_settings(args) == {"model": "network"}
    args = build_parser().parse_args(["audit", "data.npz", "--model", "network"])
    assert args.model == "network"
