"""API keys over real HTTP: listing (never secrets), revocation by endpoint and by
``api.serve.revoke_key``, refused within a second by this and by another API process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import split_key
from api.serve import revoke_key
from api.settings import Settings
from tests.processes import wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


def key_id(key: str) -> str:
    return split_key(key)[0]


def first_refusal(client: httpx.Client, since: float, path: str = "/keys") -> float:
    """Poll with ``client`` until a 401; seconds from ``since`` to the sending of that request."""
    while True:
        sent = time.monotonic()
        status = client.get(path).status_code
        if status == 401:
            return sent - since
        assert status == 200, status
        assert sent - since < 5, "the revoked key is still accepted after 5 s"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def other_process(backend, tmp_path_factory) -> Iterator[str]:
    """A second API process (uvicorn in a subprocess) on the same database; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "AUDITOR_DATABASE_URL": backend.database_url,
           "AUDITOR_DATA_DIR": str(tmp_path_factory.mktemp("other-process"))}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host",
                                "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, base, timeout=60)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_list_shows_the_tenants_keys_without_secrets(backend):
    tenant = f"keys-{uuid.uuid4().hex[:8]}"
    first, second = backend.new_key(tenant), backend.new_key(tenant)
    stranger = backend.new_key()
    with backend.client(second) as api:
        listed = api.get("/keys").json()
        assert [k["id"] for k in listed["items"]] == [key_id(second), key_id(first)]
        assert all(set(k) == {"id", "created_at", "revoked_at", "current"} for k in listed["items"])
        assert [k["current"] for k in listed["items"]] == [True, False]
        assert all(k["revoked_at"] is None for k in listed["items"])
        secrets = [split_key(k)[1] for k in (first, second, stranger)]
        assert not any(secret in api.get("/keys").text for secret in secrets)
        page = api.get("/keys", params={"limit": 1}).json()
        assert [k["id"] for k in page["items"]] == [key_id(second)] and page["next_cursor"]
        rest = api.get("/keys", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        assert [k["id"] for k in rest["items"]] == [key_id(first)] and rest["next_cursor"] is None


def test_delete_revokes_own_keys_only(backend):
    tenant = f"keys-{uuid.uuid4().hex[:8]}"
    keeper, doomed = backend.new_key(tenant), backend.new_key(tenant)
    stranger = backend.new_key()
    with backend.client(keeper) as api, backend.client(doomed) as victim, backend.client(stranger) as other:
        assert victim.get("/keys").status_code == 200
        assert other.delete(f"/keys/{key_id(doomed)}").status_code == 404
        assert other.delete(f"/keys/{'0' * 16}").status_code == 404
        assert other.delete("/keys/not-a-key-id").status_code == 404
        assert victim.get("/keys").status_code == 200
        response = api.delete(f"/keys/{key_id(doomed)}")
        assert response.status_code == 204 and response.content == b""
        assert victim.get("/keys").status_code == 401  # the same process forgets it at once
        listed = {k["id"]: k for k in api.get("/keys").json()["items"]}
        assert listed[key_id(doomed)]["revoked_at"] is not None and listed[key_id(keeper)]["revoked_at"] is None
        assert api.delete(f"/keys/{key_id(doomed)}").status_code == 204  # again: nothing changes
        assert api.get("/keys").json()["items"] == list(listed.values())
        assert api.delete(f"/keys/{key_id(keeper)}").status_code == 204  # a key may revoke itself
        assert api.get("/keys").status_code == 401


def test_revoked_key_is_refused_within_a_second_by_another_process(backend, other_process):
    tenant = f"keys-{uuid.uuid4().hex[:8]}"
    admin, doomed = backend.new_key(tenant), backend.new_key(tenant)
    with httpx.Client(base_url=f"{other_process}/api/v1", headers={"Authorization": f"Bearer {doomed}"},
                      timeout=30) as remote, backend.client(admin) as api:
        assert remote.get("/keys").status_code == 200  # now cached in the other process
        assert api.delete(f"/keys/{key_id(doomed)}").status_code == 204
        assert first_refusal(remote, time.monotonic()) < 1.0


def test_revoke_key_function(backend, other_process):
    settings = Settings(database_url=backend.database_url)
    doomed, whole = backend.new_key(), backend.new_key()
    with backend.client(doomed) as local, httpx.Client(base_url=f"{other_process}/api/v1", timeout=30,
                                                       headers={"Authorization": f"Bearer {doomed}"}) as remote:
        assert local.get("/keys").status_code == 200 and remote.get("/keys").status_code == 200
        assert revoke_key(settings, key_id(doomed)) is True
        revoked = time.monotonic()
        assert first_refusal(local, revoked) < 1.0
        assert first_refusal(remote, revoked) < 1.0
    assert revoke_key(settings, key_id(doomed)) is True  # already revoked: still there, still revoked
    assert revoke_key(settings, "0" * 16) is False
    assert revoke_key(settings, "nonsense") is False
    assert revoke_key(settings, whole) is True  # a whole key names its id
    with backend.client(whole) as api:
        assert api.get("/keys").status_code == 401
