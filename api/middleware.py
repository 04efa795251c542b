"""ASGI middleware of the service edge: security headers, the error boundary, metrics, and the
guard that authenticates, rate-limits and size-limits each request before its body is read.

All of them are pure ASGI (no ``BaseHTTPMiddleware``): they cost a function call per message
and never buffer a body.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping

from sqlalchemy.exc import SQLAlchemyError

from api.auth import Authenticator, Principal
from api.metrics import Metrics

logger = logging.getLogger("api.errors")

PRINCIPAL_SCOPE_KEY = "auditor.principal"  # the verified Principal, set by EdgeGuard

JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
HTML_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"
BASE_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"))


def header(scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def send_json(send, status: int, body: dict, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Send a complete JSON response."""
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


# --- security headers -------------------------------------------------------------------------

class SecurityHeaders:
    """Add ``nosniff``, ``DENY`` framing, ``no-referrer``, ``no-store`` and a Content-Security-Policy.

    The policy is strict for JSON (nothing may load), allows inline styles and ``data:``
    images for HTML (the self-contained audit report), and ``page_csp`` gives pages that
    need more (the Swagger page) their own. Headers the app already set are kept.
    """

    def __init__(self, app, *, page_csp: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.page_csp = {path: csp.encode() for path, csp in (page_csp or {}).items()}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page_csp = self.page_csp.get(scope["path"])

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                csp = page_csp or (HTML_CSP if content_type.startswith(b"text/html") else JSON_CSP).encode()
                headers += [(n, v) for n, v in (*BASE_HEADERS, (b"content-security-policy", csp)) if n not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- errors -------------------------------------------------------------------------------------

class ErrorBoundary:
    """Answer an unhandled exception with ``500 {"detail": "internal error", "error_id": ...}``.

    The traceback is logged with the same id (logger ``api.errors``); the client never sees
    the exception's text. If the response had already started, the error is logged and
    re-raised so that the server drops the connection.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex
            logger.exception("unhandled error, error_id=%s, %s %s", error_id, scope["method"], scope["path"])
            if started:
                raise
            await send_json(send, 500, {"detail": "internal error", "error_id": error_id},
                            ((b"connection", b"close"),))


# --- metrics --------------------------------------------------------------------------------------

class MetricsMiddleware:
    """Count requests and time them, labelled by route template (not by raw path)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


# --- rate limits -----------------------------------------------------------------------------------

class TokenBuckets:
    """One token bucket per name (an API key id, a client address): ``rate`` tokens a second,
    at most ``burst`` stored. In-process and event-loop only; the least recently used
    buckets beyond ``size`` are dropped (they refill to full).
    """

    def __init__(self, rate: float, burst: int, size: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, name: str, now: float) -> float:
        tokens, stamp = self._buckets.get(name, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def wait(self, name: str) -> float:
        """Seconds until ``name`` has a token (0: it has one now); takes nothing."""
        level = self._level(name, time.monotonic())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def take(self, name: str) -> float:
        """Take a token of ``name``: 0 if taken, else the seconds until one is available."""
        now = time.monotonic()
        level = self._level(name, now)
        if level < 1:
            return (1 - level) / self.rate
        self._buckets[name] = (level - 1, now)
        self._buckets.move_to_end(name)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return 0.0


def retry_after(seconds: float) -> tuple[bytes, bytes]:
    """A ``Retry-After`` header of whole seconds, at least 1."""
    return b"retry-after", str(max(1, math.ceil(seconds))).encode()


# --- body size ----------------------------------------------------------------------------------------

class BodyTooLarge(Exception):
    """Raised inside ``receive`` when a body passes the limit."""


async def refuse_body(send, max_bytes: int) -> None:
    """413 for a body over ``max_bytes``; the connection is closed (the rest is never read)."""
    await send_json(send, 413, {"detail": f"request body is over the limit of {max_bytes} bytes"},
                    ((b"connection", b"close"),))


async def call_with_body_limit(app, max_bytes: int, scope, receive, send) -> None:
    """Run ``app`` with request bodies limited to ``max_bytes``, whether or not Content-Length is sent.

    A declared Content-Length over the limit is refused before reading; a streamed body is
    cut off as soon as it passes the limit, and whatever the app would have answered is
    replaced by the 413.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        await refuse_body(send, max_bytes)
        return
    received = 0
    exceeded = False
    started = False

    async def limited_receive():
        nonlocal received, exceeded
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                exceeded = True
                raise BodyTooLarge
        return message

    async def guarded_send(message) -> None:
        nonlocal started
        if exceeded:
            return
        started = True
        await send(message)

    try:
        await app(scope, limited_receive, guarded_send)
    except BodyTooLarge:
        pass
    except Exception:
        if not exceeded:
            raise
    if exceeded and not started:
        await refuse_body(send, max_bytes)


# --- the guard --------------------------------------------------------------------------------------------

CHALLENGE = (b"www-authenticate", b"Bearer")
CLOSE = (b"connection", b"close")


def bearer_key(value: bytes | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header value, else None."""
    if value is None:
        return None
    scheme, _, key = value.decode("latin-1").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def body_may_follow(scope) -> bool:
    """Whether the request declares a body (non-zero Content-Length, or chunked)."""
    length = header(scope, b"content-length")
    return header(scope, b"transfer-encoding") is not None or (length is not None and length.strip() not in
                                                                (b"0", b""))


class EdgeGuard:
    """Authenticate, rate-limit and size-limit each request before the app reads its body.

    Paths in ``public_paths`` need no key. Every other request needs a valid bearer key: a
    missing or invalid one is answered ``401`` at once (``Connection: close``; the body is
    never read), and the verified :class:`~api.auth.Principal` is put in the scope under
    :data:`PRINCIPAL_SCOPE_KEY` for the app. Then:

    * ``key_limits`` (per key id) answers ``429`` with ``Retry-After`` when a key's bucket is
      empty;
    * ``failure_limits`` (per client address) counts failed authentications of requests
      that sent credentials; while an address's bucket is empty, its requests with
      credentials get ``429`` before the key is even checked, so guessing is slowed for
      valid and invalid guesses alike;
    * the body is limited to ``body_limits[(method, path)]``, else ``default_body_limit``.

    When the database cannot be asked about a key, the answer is ``503`` with ``Retry-After``.
    """

    def __init__(self, app, *, authenticator: Authenticator, public_paths: frozenset[str],
                 body_limits: Mapping[tuple[str, str], int], default_body_limit: int,
                 key_limits: TokenBuckets | None = None, failure_limits: TokenBuckets | None = None) -> None:
        self.app = app
        self.authenticator = authenticator
        self.public_paths = public_paths
        self.body_limits = dict(body_limits)
        self.default_body_limit = default_body_limit
        self.key_limits = key_limits
        self.failure_limits = failure_limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in self.public_paths:
            principal = await self._admit(scope, send)
            if principal is None:
                return
            scope[PRINCIPAL_SCOPE_KEY] = principal
        limit = self.body_limits.get((scope["method"], scope["path"]), self.default_body_limit)
        await call_with_body_limit(self.app, limit, scope, receive, send)

    async def _admit(self, scope, send) -> Principal | None:
        """The caller's principal, or None once a 401 or 429 has been sent."""
        credentials = header(scope, b"authorization")
        address = (scope.get("client") or ("unknown",))[0]
        if credentials is not None and self.failure_limits is not None:
            wait = self.failure_limits.wait(address)
            if wait > 0:
                await send_json(send, 429, {"detail": "too many failed authentications from this address; "
                                                      "retry later"}, (retry_after(wait), CLOSE))
                return None
        key = bearer_key(credentials)
        try:
            principal = await self.authenticator.principal(key) if key else None
        except SQLAlchemyError:
            logger.exception("key lookup failed, %s %s", scope["method"], scope["path"])
            await send_json(send, 503, {"detail": "cannot check the API key: the database is unavailable"},
                            (retry_after(1), CLOSE))
            return None
        if principal is None:
            if credentials is not None and self.failure_limits is not None:
                self.failure_limits.take(address)
            detail = "invalid API key" if key else "missing API key: send 'Authorization: Bearer <key>'"
            await send_json(send, 401, {"detail": detail}, (CHALLENGE, CLOSE))
            return None
        if self.key_limits is not None:
            wait = self.key_limits.take(principal.key_id)
            if wait > 0:
                closing = (CLOSE,) if body_may_follow(scope) else ()
                await send_json(send, 429, {"detail": "rate limit of this API key exceeded; retry later"},
                                (retry_after(wait), *closing))
                return None
        return principal
