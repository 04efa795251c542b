"""``auditor keys create`` and ``auditor serve``, run as real processes."""

from __future__ import annotations

import signal

import httpx
import pytest

from apitools import submit, upload, valid_npz
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
