"""A small HTTP client of the API, used by ``auditor submit``, ``status``, ``report``,
``cancel`` and ``scan``.

Errors come back as :class:`ClientError` carrying the server's ``detail`` message, or a
one-line reason when the server cannot be reached.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "canceled")


class ClientError(Exception):
    """A request the server refused, or a server that cannot be reached.

    ``status`` is the HTTP status of the answer, None when there was none.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class Client:
    """Talks to ``server``'s ``/api/v1`` with ``api_key``.

    Parameters
    ----------
    server : str, optional
        Base URL; default ``$AUDITOR_SERVER`` or http://127.0.0.1:8000.
    api_key : str, optional
        Default ``$AUDITOR_API_KEY``.
    """

    def __init__(self, server: str | None = None, api_key: str | None = None, *, timeout: float = 60.0):
        self.server = (server or os.environ.get("AUDITOR_SERVER") or DEFAULT_SERVER).rstrip("/")
        key = api_key or os.environ.get("AUDITOR_API_KEY")
        if not key:
            raise ClientError("no API key: pass --api-key or set AUDITOR_API_KEY (create one with "
                              "`auditor keys create --tenant NAME`)")
        self.http = httpx.Client(base_url=f"{self.server}/api/v1", timeout=timeout,
                                 headers={"Authorization": f"Bearer {key}"},
                                 transport=httpx.HTTPTransport(retries=3))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the auditor server at {self.server} ({exc}); is `auditor serve` "
                              "running?") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise ClientError(f"{detail} (HTTP {response.status_code})", status=response.status_code)
        return response

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Upload a dataset file; the server answers with its metadata (same content: same id)."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror}") from None
        return self._call("POST", "/datasets", files={"file": (path.name, data, "application/octet-stream")}).json()

    def submit(self, dataset_id: str, config: dict[str, Any] | None = None, *,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue an audit; a retried request with the same idempotency key returns the same audit."""
        body = {"dataset_id": dataset_id, **({"config": config} if config else {})}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._call("POST", "/audits", json=body, headers=headers).json()

    def audit(self, audit_id: str) -> dict[str, Any]:
        return self._call("GET", f"/audits/{audit_id}").json()

    def cancel(self, audit_id: str) -> dict[str, Any]:
        return self._call("POST", f"/audits/{audit_id}/cancel").json()

    def report(self, audit_id: str) -> dict[str, Any]:
        return self._call("GET", f"/audits/{audit_id}/report").json()

    def report_html(self, audit_id: str) -> str:
        return self._call("GET", f"/audits/{audit_id}/report", params={"format": "html"}).text

    def cleaned(self, audit_id: str, out_path: str | Path) -> dict[str, Any]:
        """Download the audit's dataset without its flagged examples to ``out_path`` (.npz).

        Returns
        -------
        dict with ``path``, ``bytes`` and ``sha256`` of the file written.
        """
        import hashlib

        data = self._call("GET", f"/audits/{audit_id}/cleaned").content
        path = Path(out_path)
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise ClientError(f"cannot write {path}: {exc.strerror}") from None
        return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def scan(self, dataset_ids: list[str], config: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"dataset_ids": dataset_ids, **({"config": config} if config else {})}
        return self._call("POST", "/scans", json=body).json()

    def get_scan(self, scan_id: str) -> dict[str, Any]:
        return self._call("GET", f"/scans/{scan_id}").json()

    def list_scans(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page of the tenant's scans, newest first: ``items`` and ``next_cursor``."""
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return self._call("GET", "/scans", params=params).json()

    def scan_report(self, scan_id: str) -> dict[str, Any]:
        """A scan's summary report: per audit its dataset's filename, status, flagged count and
        verdict line; totals."""
        return self._call("GET", f"/scans/{scan_id}/report").json()

    def scan_report_html(self, scan_id: str) -> str:
        return self._call("GET", f"/scans/{scan_id}/report", params={"format": "html"}).text

    def wait(self, fetch: Callable[[], dict[str, Any]], *, done: Callable[[dict], bool],
             on_update: Callable[[dict], None] | None = None, poll: float = 1.0,
             timeout: float | None = None) -> dict[str, Any]:
        """Poll ``fetch()`` until ``done(state)``; call ``on_update`` with each state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = fetch()
            if on_update:
                on_update(state)
            if done(state):
                return state
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"still {state.get('status')} after {timeout:.0f} s")
            time.sleep(poll)
