"""``auditor keys create`` and ``auditor serve`` as real processes; the client commands and
their exit codes against the live API."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from apitools import submit, upload, valid_npz
from auditor.cli import main
from store import repository
from store.scratch import scratch_database
from tests.processes import auditor, free_port, start_auditor, wait_until_healthy


def test_keys_create_prints_a_working_key_on_its_last_line(backend):
    result = auditor("keys", "create", "--tenant", "cli-tenant", "--database-url", backend.database_url)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("aud_") and " " not in key
    with backend.client(key) as client:
        assert upload(client, valid_npz()).status_code == 201
    second = auditor("keys", "create", "--tenant", "cli-tenant", "--database-url", backend.database_url)
    with backend.client(second.stdout.strip().splitlines()[-1]) as client:
        assert len(client.get("/datasets").json()["items"]) >= 1  # same tenant, same datasets
    assert auditor("keys", "create", "--tenant", " ", "--database-url", backend.database_url).returncode == 2


def test_keys_revoke_refuses_the_key_within_a_second(backend):
    key = auditor("keys", "create", "--tenant", "cli-revoke", "--database-url", backend.database_url
                  ).stdout.strip().splitlines()[-1]
    with backend.client(key) as client:
        assert client.get("/datasets").status_code == 200
    key_id = key.split("_")[1]
    result = auditor("keys", "revoke", key_id, "--database-url", backend.database_url)
    assert result.returncode == 0 and key_id in result.stdout, result.stderr
    time.sleep(1.0)                                   # the servers trust a verified key for at most 1 s
    with backend.client(key) as client:
        assert client.get("/datasets").status_code == 401
    unknown = auditor("keys", "revoke", "0123456789abcdef", "--database-url", backend.database_url)
    assert unknown.returncode == 2 and "no API key" in unknown.stderr


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_serve_creates_the_schema_and_serves(backend_name, tmp_path):
    with scratch_database(backend_name, tmp_path / "db") as url:
        port = free_port()
        process = start_auditor("serve", "--no-workers", "--host", "127.0.0.1", "--port", str(port),
                                "--database-url", url, "--data-dir", str(tmp_path / "data"), "--no-access-log")
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}", timeout=60)
            base = f"http://127.0.0.1:{port}/api/v1"
            key = auditor("keys", "create", "--tenant", "t", "--database-url", url).stdout.splitlines()[-1]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                dataset = upload(client, valid_npz()).json()["id"]
                audit = submit(client, dataset).json()["id"]
                assert client.get(f"/audits/{audit}").json()["status"] == "queued"
            assert any((tmp_path / "data" / "blobs").rglob("*.npz"))
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        log = tmp_path / "data" / "logs" / "serve.log"
        said = process.stdout.read().strip().splitlines()
        assert len(said) == 1 and str(log) in said[0]                  # one line: where the logs go
        assert "Application startup complete" in log.read_text()


class Cli:
    """``auditor ARGS`` in this process against the live API, as one tenant."""

    def __init__(self, backend, key, capsys, tmp_path):
        self.flags = ["--server", backend.base_url, "--api-key", key]
        self.capsys, self.tmp_path, self.backend = capsys, tmp_path, backend

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, *self.flags])
        out, err = self.capsys.readouterr()
        return code, out, err

    def file(self, seed: int) -> str:
        path = self.tmp_path / f"d{seed}.npz"
        path.write_bytes(valid_npz(seed=seed))
        return str(path)

    def submitted(self, seed: int) -> str:
        code, out, _ = self("submit", self.file(seed))
        assert code == 0
        return out.strip().splitlines()[-1]

    def finish(self, audit_id: str, flagged: list[int]) -> None:
        with self.backend.sessions() as session:
            repository.claim_audit(session, audit_id, "w")
            repository.finish_audit(session, audit_id, html="<p>report</p>",
                                    report={"flagged": flagged, "status_line": f"{len(flagged)} examples flagged"})

    def fail(self, audit_id: str) -> None:
        with self.backend.sessions() as session:
            repository.claim_audit(session, audit_id, "w")
            repository.fail_audit(session, audit_id, "training diverged")


@pytest.fixture
def cli(backend, key, capsys, tmp_path) -> Cli:
    return Cli(backend, key, capsys, tmp_path)


def test_audit_exit_codes(cli, tmp_path):
    flagged, clean, failed, canceled = (cli.submitted(seed) for seed in (41, 42, 43, 44))
    assert cli("status", flagged)[:2] == (0, f"audit {flagged}: queued, 0%, 0 trials\n")
    code, _, err = cli("report", flagged)
    assert code == 2 and "status" in err and "--wait" in err                # not finished: say what to run

    cli.finish(flagged, [1, 2])
    code, out, _ = cli("report", flagged, "--out", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert code == 1 and "2 examples flagged" in out
    assert json.loads((tmp_path / "r.json").read_text())["flagged"] == [1, 2]
    assert (tmp_path / "r.html").read_text() == "<p>report</p>"
    assert cli("status", flagged)[0] == 0 and cli("status", flagged, "--wait")[0] == 1

    cli.finish(clean, [])
    assert cli("report", clean, "--json")[0] == 0 and cli("status", clean, "--wait")[0] == 0

    cli.fail(failed)
    assert cli("status", failed)[0] == 3 and cli("status", failed, "--wait")[0] == 3
    code, _, err = cli("report", failed)
    assert code == 3 and "training diverged" in err

    assert cli("cancel", canceled)[0] == 0
    assert cli("status", canceled)[0] == 3 and cli("report", canceled)[0] == 3

    code, _, err = cli("report", "0" * 32)
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    assert cli("status", "not an id")[0] == 2


def test_scan_commands_and_scan_ids_given_to_status_and_report(cli, tmp_path):
    code, out, _ = cli("scan", cli.file(51), cli.file(52))                  # short for `scan submit`
    assert code == 0
    scan_id = out.strip().splitlines()[-1]
    code, out, _ = cli("status", scan_id)                                   # a scan id shows the scan
    assert code == 0 and out.startswith(f"scan {scan_id}: queued, 2 audits")
    scan = json.loads(cli("scan", "status", scan_id, "--json")[1])
    first, second = (a["id"] for a in scan["audits"])
    assert cli("scan", "report", scan_id)[0] == 0                            # partial: nothing ended badly

    cli.finish(first, [3])
    cli.finish(second, [])
    code, out, _ = cli("report", scan_id, "--out", str(tmp_path / "s.json"), "--html", str(tmp_path / "s.html"))
    assert code == 1 and "d51.npz" in out and "1 examples flagged" in out
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["totals"]["flagged"] == 1 and report["status"] == "finished"
    assert "d52.npz" in (tmp_path / "s.html").read_text()
    assert cli("scan", "status", scan_id, "--wait")[0] == 1

    code, out, _ = cli("scan", "submit", cli.file(53), "--budget", "40")
    other = out.strip().splitlines()[-1]
    cli.fail(json.loads(cli("scan", "status", other, "--json")[1])["audits"][0]["id"])
    assert cli("scan", "report", other)[0] == 3 and cli("scan", "status", other)[0] == 3

    code, out, _ = cli("scan", "list", "--limit", "1")
    assert code == 0 and len(out.strip().splitlines()) == 1 and other in out
    listed = json.loads(cli("scan", "list", "--json")[1])
    assert [s["id"] for s in listed] == [other, scan_id]
    code, _, err = cli("cancel", scan_id)
    assert code == 2 and "is a scan" in err


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self):                                                         # noqa: N802
        body = b'{"detail": "database unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_server_errors_exit_3(capsys):
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["status", "0" * 32, "--server", url, "--api-key", "aud_x_y"]) == 3
        assert "server error: database unavailable (HTTP 503)" in capsys.readouterr().err
    finally:
        server.shutdown()


def test_submit_takes_tables_and_clean_writes_the_servers_cleaned_copy_as_a_table(cli, tmp_path):
    from apitools import valid_arrays
    from auditor.data import load_dataset, save_dataset

    arrays = valid_arrays(seed=45)
    audits = []
    for suffix in ("csv", "parquet"):
        path = tmp_path / f"train.{suffix}"
        save_dataset(path, **arrays)
        code, out, err = cli("submit", str(path))
        assert code == 0, err
        audits.append(out.strip().splitlines()[-1])
    cli.finish(audits[0], [0, 3])
    for out in ("cleaned.csv", "cleaned.parquet", "cleaned.npz"):
        code, printed, err = cli("clean", "--audit", audits[0], "--out", str(tmp_path / out))
        assert code == 0 and f"wrote {tmp_path / out}" in printed, err
        cleaned = load_dataset(tmp_path / out)
        keep = [i for i in range(12) if i not in (0, 3)]
        assert cleaned.x.tolist() == arrays["x"][keep].tolist() and cleaned.x_val.tolist() == arrays["x_val"].tolist()
    assert (tmp_path / "cleaned.csv").read_text().startswith("x_0,x_1,")
