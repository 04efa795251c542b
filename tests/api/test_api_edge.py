"""The service edge over real HTTP: the key is checked before any body is read, per-route body
limits, rate limits, security headers and JSON errors with an error id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

from api.main import create_app
from api.settings import Settings
from apitools import submit, upload, valid_npz
from conftest import LiveServer
from store import repository

BIG = 60 * 1024 * 1024
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
HTML_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"


class RawUpload:
    """Send a request with a big body over a raw socket while a thread reads the answer.

    Records how many body bytes had been sent when the first answer byte arrived.
    """

    def __init__(self, base_url: str, path: str, headers: dict[str, str], size: int) -> None:
        url = urlparse(base_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json",
                f"Content-Length: {size}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = ("\r\n".join(head) + "\r\n\r\n").encode()
        self.size = size
        self.sent = 0
        self.sent_at_answer: int | None = None
        self.answer = bytearray()
        self.answered = threading.Event()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                if self.sent_at_answer is None:
                    self.sent_at_answer = self.sent
                    self.answered.set()
                self.answer += chunk
        except OSError:
            pass
        self.answered.set()

    def run(self) -> tuple[int, dict[str, str], dict, float]:
        """Send; return (status, headers, body, seconds from the end of the headers to the answer)."""
        self.sock.sendall(self.head)
        start = time.perf_counter()
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        chunk = b" " * (256 * 1024)
        try:
            while self.sent < self.size and not self.answered.is_set():
                self.sent += self.sock.send(chunk[: self.size - self.sent])
        except OSError:
            pass  # the server closed the connection
        self.answered.wait(30)
        elapsed = time.perf_counter() - start
        reader.join(5)
        self.sock.close()
        head, _, body = bytes(self.answer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, json.loads(body), elapsed


# --- the key before the body -----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/audits", "/api/v1/datasets", "/api/v1/scans"])
def test_big_body_without_key_is_refused_before_it_is_read(backend, path):
    sender = RawUpload(backend.base_url, path, {}, BIG)
    status, headers, body, elapsed = sender.run()
    assert status == 401 and "API key" in body["detail"]
    assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
    # the answer came while most of the body was still unsent (the old code read all of it first)
    assert sender.sent_at_answer is not None and sender.sent_at_answer < BIG // 4, sender.sent_at_answer
    assert elapsed < 2.0, elapsed


def test_health_answers_while_big_unauthenticated_bodies_are_sent(backend):
    stop = threading.Event()
    statuses = []

    def flood() -> None:
        while not stop.is_set():
            statuses.append(RawUpload(backend.base_url, "/api/v1/audits", {},
                                      BIG).run()[0])

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    latencies = []
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                start = time.perf_counter()
                assert client.get(f"{backend.base_url}/api/v1/health").status_code == 200
                latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        thread.join(30)
    assert statuses and set(statuses) == {401}
    assert max(latencies) < 1.0, latencies


def test_declared_body_over_the_json_limit_is_413_before_reading(backend, key):
    sender = RawUpload(backend.base_url, "/api/v1/audits", {"Authorization": f"Bearer {key}"}, BIG)
    status, headers, body, _ = sender.run()
    assert status == 413 and str(1024 * 1024) in body["detail"]
    assert headers["connection"] == "close"
    assert sender.sent_at_answer < BIG // 4


def test_streamed_json_body_is_cut_off_past_the_limit(serve, backend):
    base, _ = serve(max_json_bytes=1000)
    key = backend.new_key()

    def chunks():
        yield b'{"dataset_id": "' + b"a" * 600
        yield b"a" * 600 + b'"}'

    response = httpx.post(f"{base}/api/v1/audits", content=chunks(), timeout=30,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert "1000" in response.json()["detail"]
    small = httpx.post(f"{base}/api/v1/audits", json={"dataset_id": "0" * 32}, timeout=30,
                       headers={"Authorization": f"Bearer {key}"})
    assert small.status_code == 404


def test_the_upload_limit_applies_to_the_upload_route_only(serve, backend):
    base, _ = serve(max_json_bytes=2000)
    key = backend.new_key()
    with httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
        data = valid_npz(seed=5)
        assert len(data) > 2000
        assert upload(api, data).status_code == 201
        padded = {"dataset_ids": ["0" * 32], "config": {"seed": 1}, "pad": " " * 3000}
        assert api.post("/scans", json=padded).status_code == 413


# --- rate limits ---------------------------------------------------------------------------------------

def test_rate_limit_per_key_is_429_with_retry_after(serve, backend):
    base, _ = serve(rate_limit_per_second=0.5, rate_limit_burst=3)
    first, second = backend.new_key(), backend.new_key()
    with httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {first}"}, timeout=30) as api:
        assert [api.get("/audits").status_code for _ in range(3)] == [200, 200, 200]
        limited = api.get("/audits")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        assert "rate limit" in limited.json()["detail"]
        assert all(httpx.get(f"{base}/api/v1/health").status_code == 200 for _ in range(10))
    with httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {second}"}, timeout=30) as api:
        assert api.get("/audits").status_code == 200


def test_failed_authentications_are_limited_per_address(serve, backend):
    base, _ = serve(auth_failures_per_second=0.2, auth_failures_burst=3)
    wrong = {"Authorization": "Bearer aud_0123456789abcdef_guess"}
    statuses = [httpx.get(f"{base}/api/v1/audits", headers=wrong).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    # while the address is blocked, even a valid key is not checked: guessing learns nothing
    blocked = httpx.get(f"{base}/api/v1/audits", headers={"Authorization": f"Bearer {backend.new_key()}"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert httpx.get(f"{base}/api/v1/audits").status_code == 401  # no credentials: nothing to guess
    assert httpx.get(f"{base}/api/v1/health").status_code == 200


# --- headers --------------------------------------------------------------------------------------------

def assert_security_headers(response: httpx.Response, csp: str) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == csp


def test_json_answers_have_strict_security_headers(backend, api):
    for response in (api.get("/audits"), api.get("/audits/" + "0" * 32), httpx.get(f"{backend.base_url}/api/v1/audits"),
                     httpx.get(f"{backend.base_url}/api/v1/health"), api.get("/audits", params={"limit": 0})):
        assert_security_headers(response, JSON_CSP)
        assert response.headers["cache-control"] == "no-store"


def test_html_report_has_the_page_policy(backend, api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    with backend.sessions() as session:
        repository.claim_audit(session, audit, "w")
        repository.finish_audit(session, audit, report={"flagged": []}, html="<html><style>p{}</style></html>")
    html = api.get(f"/audits/{audit}/report", params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html")
    assert_security_headers(html, HTML_CSP)
    assert_security_headers(api.get(f"/audits/{audit}/report"), JSON_CSP)


def test_swagger_page_policy_allows_its_inline_script(backend):
    page = httpx.get(f"{backend.base_url}/api/v1/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    assert scripts
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "https://cdn.jsdelivr.net" in csp and "'unsafe-eval'" not in csp
    assert page.headers["x-frame-options"] == "DENY"


# --- errors ---------------------------------------------------------------------------------------------

def crafted_cursor(stamp: str, last_id: str = "0" * 32) -> str:
    raw = json.dumps([stamp, last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"])
@pytest.mark.parametrize("path", ["/audits", "/datasets", "/keys"])
def test_crafted_cursor_is_400_json(api, path, stamp):
    response = api.get(path, params={"cursor": crafted_cursor(stamp)})
    assert response.status_code == 400, response.text
    assert "invalid cursor" in response.json()["detail"]


def test_unhandled_error_is_500_json_with_a_logged_error_id(serve, backend, caplog):
    base, app = serve()

    def explode() -> None:
        raise RuntimeError("secret internal text")

    app.add_api_route("/api/v1/explode", explode)
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = httpx.get(f"{base}/api/v1/explode", headers={"Authorization": f"Bearer {backend.new_key()}"})
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"detail", "error_id"} and body["detail"] == "internal error"
    assert "secret" not in response.text and re.fullmatch(r"[0-9a-f]{32}", body["error_id"])
    assert_security_headers(response, JSON_CSP)
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert logged and "secret internal text" in str(logged[0].exc_info[1])


def test_key_lookup_without_a_database_is_503(tmp_path):
    # a database without the schema: every key lookup fails in the driver
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/empty.db", data_dir=tmp_path / "data"))
    with LiveServer(app) as server:
        response = httpx.get(f"{server.base_url}/api/v1/audits",
                             headers={"Authorization": "Bearer aud_0123456789abcdef_secret"})
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert response.json()["detail"] == "cannot check the API key: the database is unavailable"
