"""The README's service flow on a fresh directory, as real processes: ``auditor serve``
(API + dispatcher + its own local Ray on SQLite), then ``auditor submit``, ``status`` and
``report``; and ``auditor audit --executor ray`` on an existing cluster."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.processes import auditor, free_port, start_auditor, wait_until_healthy

pytestmark = pytest.mark.timeout(600)


def test_serve_submit_report_end_to_end(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDITOR_", "RAY_ADDRESS"))}
    env["AUDITOR_SERVER"] = f"http://127.0.0.1:{port}"
    serve = start_auditor("serve", "--port", str(port), "--no-access-log", cwd=tmp_path, env=env)
    try:
        wait_until_healthy(serve, env["AUDITOR_SERVER"], timeout=120)
        created = auditor("keys", "create", "--tenant", "me", cwd=tmp_path, env=env)
        assert created.returncode == 0, created.stderr
        env["AUDITOR_API_KEY"] = created.stdout.strip().splitlines()[-1]
        made = auditor("make-benchmark", "--kind", "standalone", "--n", "40", "--poison-fraction", "0.1",
                       "--seed", "3", "--out", "data.npz", cwd=tmp_path, env=env)
        assert made.returncode == 0, made.stderr

        submitted = auditor("submit", "data.npz", "--confirm-seeds", "6", cwd=tmp_path, env=env)
        assert submitted.returncode == 0, submitted.stderr
        audit_id = submitted.stdout.strip().splitlines()[-1]
        followed = auditor("status", audit_id, "--wait", cwd=tmp_path, env=env)
        assert "succeeded" in followed.stdout, followed.stdout + followed.stderr

        report = auditor("report", audit_id, "--html", "report.html", "--out", "report.json", cwd=tmp_path, env=env)
        body = json.loads((tmp_path / "report.json").read_text())
        verdict = 1 if body["flagged"] else 0                          # exit status 1: examples flagged
        assert report.returncode == verdict and followed.returncode == verdict, report.stderr
        assert body["trials"] > 0 and len(body["scores"]) == 40 and "precision" in body["evaluation"]
        assert "<html" in (tmp_path / "report.html").read_text().lower()
        assert "against ground truth: precision" in report.stdout

        missing = auditor("report", "0" * 32, cwd=tmp_path, env=env)
        assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
        assert (tmp_path / "auditor-data").is_dir()                  # the embedded default, nothing else
    finally:
        serve.send_signal(signal.SIGINT)
        out = serve.communicate(timeout=120)[0]
    log = tmp_path / "auditor-data" / "logs" / "serve.log"             # serve logs there, not to the terminal
    assert serve.returncode == 0, out + log.read_text()
    assert len(out.strip().splitlines()) == 1 and "logging to" in out
    assert "succeeded" in log.read_text()                              # the dispatcher's log line


def test_client_commands_without_a_server_fail_in_one_line(tmp_path):
    env = {**os.environ, "AUDITOR_SERVER": f"http://127.0.0.1:{free_port()}", "AUDITOR_API_KEY": "aud_x.y"}
    result = auditor("status", "0" * 32, env=env, timeout=60)
    assert result.returncode == 2 and "cannot reach" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    env.pop("AUDITOR_API_KEY")
    result = auditor("status", "0" * 32, env=env, timeout=60)
    assert result.returncode == 2 and "AUDITOR_API_KEY" in result.stderr


def test_audit_with_the_ray_executor_on_a_cluster(cluster, tmp_path):
    made = auditor("make-benchmark", "--kind", "standalone", "--n", "40", "--poison-fraction", "0.1", "--seed", "3",
                   "--out", str(tmp_path / "d.npz"))
    assert made.returncode == 0
    ray_run = auditor("audit", str(tmp_path / "d.npz"), "--executor", "ray", "--ray-address", cluster.address,
                      "--confirm-seeds", "6", "--json")
    report = json.loads(ray_run.stdout)
    assert ray_run.returncode == (1 if report["flagged"] else 0), ray_run.stderr     # 1: examples flagged
    assert 0 < report["trials"] and len(report["scores"]) == 40 and "recall" in report["evaluation"]
    bad = auditor("audit", str(tmp_path / "d.npz"), "--ray-address", cluster.address)
    assert bad.returncode == 2 and "--executor ray" in bad.stderr
