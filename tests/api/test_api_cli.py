"""``auditor keys create`` and ``auditor serve``, run as real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from apitools import submit, upload, valid_npz
from store.scratch import scratch_database


def auditor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_serve_creates_the_schema_and_serves(backend_name, tmp_path):
    with scratch_database(backend_name, tmp_path / "db") as url:
        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "auditor.cli", "serve", "--no-workers", "--host",
                                    "127.0.0.1", "--port", str(port), "--database-url", url, "--data-dir",
                                    str(tmp_path / "data"), "--no-access-log"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}/api/v1"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stdout.read()
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "auditor serve did not come up"
                time.sleep(0.2)
            key = auditor("keys", "create", "--tenant", "t", "--database-url", url).stdout.splitlines()[-1]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
                dataset = upload(client, valid_npz()).json()["id"]
                audit = submit(client, dataset).json()["id"]
                assert client.get(f"/audits/{audit}").json()["status"] == "queued"
            assert any((tmp_path / "data" / "blobs").rglob("*.npz"))
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
