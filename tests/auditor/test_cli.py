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
