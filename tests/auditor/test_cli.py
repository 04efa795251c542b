import json
import subprocess
import sys
from pathlib import Path

import pytest


def _auditor(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


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
    saved = tmp_path / "r.json"
    out = _auditor("audit", str(data), "--json", "--confirm-seeds", "6", "--html", str(html), "--out", str(saved))
    report = json.loads(out.stdout)
    assert report["flagged"] and out.returncode == 1, out.stderr          # exit status 1: examples flagged
    for field in ("flagged", "scores", "trials", "generalization", "evaluation"):
        assert field in report
    assert len(report["scores"]) == 40 and report["trials"] > 0
    assert {"precision", "recall"} <= set(report["evaluation"])
    assert html.read_text().startswith("<!DOCTYPE html>")

    cleaned = tmp_path / "cleaned.npz"
    out = _auditor("clean", str(data), "--report", str(saved), "--out", str(cleaned))
    assert out.returncode == 0 and f"removed {len(report['flagged'])}" in out.stdout, out.stderr
    import numpy as np
    with np.load(data) as before, np.load(cleaned) as after:
        keep = np.setdiff1d(np.arange(40), report["flagged"])
        assert np.array_equal(after["x"], before["x"][keep]) and np.array_equal(after["y"], before["y"][keep])
    out = _auditor("clean", str(cleaned), "--report", str(saved), "--out", str(tmp_path / "again.npz"))
    assert out.returncode == 2 and "another file" in out.stderr           # the report is not of this file


def test_bad_files_are_one_line_errors(tmp_path):
    cases = {"not.npz": b"hello", "empty.npz": b"", "text.csv": b"x_0,y\n1,abc\n",
             "split.csv": b"x_0,y,split\n1,2,test\n", "broken.parquet": b"PAR1" + b"\0" * 32 + b"PAR1"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    import numpy as np
    np.savez(tmp_path / "nan.npz", x=np.full((3, 4), np.nan), y=np.ones(3))
    np.savez(tmp_path / "pickle.npz", x=np.array([{"a": 1}], dtype=object), y=np.ones(1))
    np.savez(tmp_path / "shape.npz", x=np.ones((3, 4)), y=np.ones(5))
    for name in (*cases, "nan.npz", "pickle.npz", "shape.npz", "missing.npz"):
        out = _auditor("audit", str(tmp_path / name))
        assert out.returncode == 2, (name, out.stderr)
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("auditor: error:")


@pytest.mark.slow
def test_bench_detect_quick_json_contract():
    # four audits: about 90 s on two idle cores, over 300 s on a loaded CI machine
    out = _auditor("bench", "detect", "--quick", "--strategy", "group", "--json", timeout=1200)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert len(r["rows"]) == 4
    assert {"precision", "recall", "auroc", "clean_without_flags", "within_1_5x_of_clean"} <= set(r["summary"])
    assert {"gamma0", "trace_push", "loss_trajectory"} <= set(r["summary"]["baselines"])
    assert all(row["detector"]["trials"] > 0 for row in r["rows"])
    assert {"harmful", "false_alarms", "trials", "poisoned_not_harmful", "not_fitted"} <= set(r["summary"])
    assert r["summary"]["false_alarms"]["sets"] == 1 and len(r["summary"]["false_alarms"]["ci95"]) == 2
    assert all({"harm_ratio", "harmful"} <= set(row["generalization"]) for row in r["rows"])


def test_strategy_and_model_choices_are_the_config_schema():
    from typing import get_args

    from auditor.cli import CONFIRM_SEEDS, MODEL_CHOICES, STRATEGY_CHOICES
    from auditor.config import AuditConfig, Strategy
    from auditor.models import BUILTINS
    assert set(STRATEGY_CHOICES) == set(get_args(Strategy))
    assert set(MODEL_CHOICES) == set(BUILTINS)
    assert CONFIRM_SEEDS == AuditConfig().confirm_seeds


def test_model_flag_reaches_the_audit_config():
    from auditor.cli import build_parser
    from auditor.cli.common import audit_settings
    args = build_parser().parse_args(["submit", "data.npz", "--model", "network"])
    assert audit_settings(args) == {"model": "network"}
    args = build_parser().parse_args(["audit", "data.npz", "--model", "network"])
    assert args.model == "network"


def test_clean_audit_exits_0_and_a_failed_run_exits_3(tmp_path):
    data = tmp_path / "clean.npz"
    assert _auditor("make-benchmark", "--kind", "clean", "--n", "40", "--out", str(data), "--seed", "1").returncode == 0
    out = _auditor("audit", str(data), "--confirm-seeds", "6")
    assert out.returncode == 0 and "No harmful examples" in out.stdout, out.stdout + out.stderr
    failed = _auditor("audit", str(data), "--device", "cuda:63")         # no such device: training fails
    assert failed.returncode == 3
    assert failed.stderr.strip().splitlines()[-1].startswith("auditor: error: the run failed")


def test_interrupted_audit_exits_130(tmp_path):
    import signal
    import time

    data = tmp_path / "d.npz"
    assert _auditor("make-benchmark", "--kind", "clean", "--n", "40", "--out", str(data)).returncode == 0
    process = subprocess.Popen([sys.executable, "-m", "auditor.cli", "audit", str(data)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().endswith("auditor: interrupted")


def test_usage_errors_exit_2_and_help_and_version_exit_0(capsys):
    from importlib.metadata import version

    from auditor.cli import main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"auditor {version('auditor')}"
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "``" not in help_text and "exit status:" in help_text
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in help_text
    assert main([]) == 2
    assert main(["audit"]) == 2 and "required" in capsys.readouterr().err
    assert main(["audit", "x.npz", "--strategy", "nope"]) == 2
    assert main(["audit", "x.npz", "--budget", "-3"]) == 2
    assert main(["scan", "status"]) == 2
    assert main(["clean", "--out", "c.npz"]) == 2 and "--report" in capsys.readouterr().err
    assert main(["clean", "d.npz", "--report", "r.json", "--audit", "a", "--out", "c.npz"]) == 2


def test_scan_shorthand_and_each_flag_declared_once():
    from auditor.cli import build_parser
    from auditor.cli.client import scan_shorthand
    assert scan_shorthand(["scan", "a.npz", "b.npz", "--wait"]) == ["scan", "submit", "a.npz", "b.npz", "--wait"]
    assert scan_shorthand(["scan", "list"]) == ["scan", "list"]
    args = build_parser().parse_args(scan_shorthand(["scan", "a.npz", "--budget", "40"]))
    assert args.files == ["a.npz"] and args.budget == 40
    source = "".join((Path(__file__).parents[2] / "auditor" / "cli" / f"{m}.py").read_text()
                     for m in ("main", "local", "data", "paper", "client", "service"))
    for flag in ("--strategy", "--budget", "--model", "--confirm-seeds", "--server", "--api-key", "--database-url",
                 "--device", "--json", "--html", "--wait", "--ray-address", "--max-running-audits"):
        assert f'"{flag}"' not in source, f"{flag} is declared outside auditor/cli/common.py"


def test_progress_covers_the_whole_audit_with_named_phases():
    from auditor.engine import run_audit
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.config import AuditConfig, planned_trials
    from auditor.data import validate_arrays

    arrays = make_benchmark(BenchmarkSpec(kind="standalone", n=40, poison_fraction=0.05, length=6, seed=1))
    dataset = validate_arrays(arrays)
    config = AuditConfig(confirm_seeds=6)
    calls = []
    result = run_audit(dataset, config, progress=lambda done, total, phase: calls.append((done, total, phase)))
    expected = planned_trials(config, n=40, task="regression")
    assert expected == result.budget + 2 * 18 and all(total == expected for _, total, _ in calls)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)     # never resets
    assert calls[-1][0] == len(result.outcomes) <= expected
    phases = list(dict.fromkeys(p for _, _, p in calls))
    assert phases == ["screening", f"search ({result.strategy})", "confirmation"]


def test_audit_takes_a_users_model_by_module_and_attribute(tmp_path):
    """`--model module:attr` trains the user's factory (a module outside the package)."""
    (tmp_path / "usermodels.py").write_text(
        "import torch\n"
        "import auditor\n"
        "class Last(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))\n"
        "    def forward(self, x):\n"
        "        return self.w * x[:, -1, :]\n"
        "def factory(seed):\n"
        "    return Last()\n"
        "model = auditor.TorchModel(factory, optimizer='adam', lr=0.05, steps=30)\n")
    data = tmp_path / "b.npz"
    assert _auditor("make-benchmark", "--kind", "clean", "--n", "30", "--out", str(data)).returncode == 0
    import os
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "auditor.cli", "audit", str(data), "--model", "usermodels:model",
                          "--json", "--confirm-seeds", "6", "--budget", "12"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    assert report["trials"] > 0 and report["reproduce"]["config"]["model"] == "usermodels:model"
    bad = _auditor("audit", str(data), "--model", "nosuchmodule_xyz:model")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr


def test_forensics_mode_scores_on_the_target_and_needs_one(tmp_path):
    import numpy as np

    from auditor.engine import build_problem
    from auditor.config import AuditConfig
    from auditor.data import load_dataset

    data = tmp_path / "b.npz"
    assert _auditor("make-benchmark", "--kind", "standalone", "--n", "40", "--out", str(data)).returncode == 0
    out = _auditor("audit", str(data), "--mode", "forensics")
    assert out.returncode == 2 and "x_target" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    with np.load(data) as arrays:
        targeted = dict(arrays) | {"x_target": arrays["x_val"][:4], "y_target": arrays["y_val"][:4]}
    np.savez(tmp_path / "t.npz", **targeted)
    dataset = load_dataset(tmp_path / "t.npz")
    forensics = build_problem(dataset, AuditConfig(mode="forensics"))        # (the student sees scaled data)
    assert np.allclose(forensics.x_val * forensics.x_scale, targeted["x_target"], rtol=1e-12, atol=0)
    assert build_problem(dataset, AuditConfig()).x_val.shape[0] == len(targeted["x_val"]) > 4
    out = _auditor("audit", str(tmp_path / "t.npz"), "--mode", "forensics", "--json")
    assert out.returncode in (0, 1) and json.loads(out.stdout)["mode"] == "forensics", out.stderr
    assert json.loads(out.stdout)["generalization"]["metric"] == "target relative error"


@pytest.mark.slow
def test_the_same_set_as_npz_csv_and_parquet_audits_to_the_same_report(tmp_path):
    """`auditor audit` reads CSV and Parquet tables; the same poisoned set in each format gets
    the same verdict, scores and evaluation (only the file's sha256 differs)."""
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    arrays = make_benchmark(BenchmarkSpec(kind="standalone", n=30, seed=1))
    paths = [tmp_path / f"b.{suffix}" for suffix in ("npz", "csv", "parquet")]
    for path in paths:
        save_dataset(path, **arrays)
    runs = [subprocess.Popen([sys.executable, "-m", "auditor.cli", "audit", str(path), "--json", "--confirm-seeds",
                              "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in paths]
    outs = [run.communicate(timeout=600) + (run.returncode,) for run in runs]
    reports = []
    for stdout, stderr, code in outs:
        assert code == 1, stderr                                               # the poisons are flagged
        reports.append(json.loads(stdout))
    first = reports[0]
    assert first["flagged"] and first["evaluation"]["recall"] > 0
    for report in reports[1:]:
        assert report["reproduce"]["dataset_sha256"] != first["reproduce"]["dataset_sha256"]
        for field in ("flagged", "scores", "trials", "evaluation", "status_line"):
            assert report[field] == first[field], field


def test_report_schema_prints_the_published_schema():
    from pathlib import Path

    from auditor.report_schema import same_schema

    out = _auditor("report-schema")
    assert out.returncode == 0, out.stderr
    published = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"
    assert same_schema(json.loads(out.stdout), json.loads(published.read_text(encoding="utf-8")))
    assert {"flagged", "verdict", "confirmation", "evidence"} <= set(json.loads(out.stdout)["required"])
