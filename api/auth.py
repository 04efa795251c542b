"""API keys: ``aud_<key id>_<secret>``; only the sha256 of the secret is stored."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from store import repository

PREFIX = "aud"
_UNKNOWN = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant and the key used."""

    tenant_id: str
    key_id: str


def hash_secret(secret: str) -> str:
    """Hex sha256 of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """A fresh key; returns ``(key, key_id, secret_sha256)``."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"{PREFIX}_{key_id}_{secret}", key_id, hash_secret(secret)


def split_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or len(key_id) != 16 or not secret or not all(c in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key, else None (compared in constant time)."""
    parts = split_key(key)
    if parts is None:
        return None
    key_id, secret = parts
    row = repository.get_api_key(session, key_id)
    expected = row.secret_sha256 if row is not None else _UNKNOWN
    if not hmac.compare_digest(hash_secret(secret), expected) or row is None:
        return None
    return Principal(tenant_id=row.tenant_id, key_id=row.id)


def create_key(session: Session, tenant_name: str) -> str:
    """Create a key for the tenant ``tenant_name`` (created if missing); return the key."""
    tenant = repository.get_or_create_tenant(session, tenant_name)
    key, key_id, secret_hash = generate_key()
    repository.add_api_key(session, tenant.id, key_id, secret_hash)
    return key


class KeyCache:
    """Keys verified recently, mapped to their principal for ``ttl`` seconds (a bounded LRU).

    Entries are keyed by the sha256 of the whole key. Not thread-safe: use it from the
    event loop only. A ``ttl`` of 0 disables it. An entry expires ``ttl`` seconds after the
    lookup that verified it *started*, so a key revoked while it was being looked up is
    not trusted longer than ``ttl`` after the revocation.
    """

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, key: str) -> Principal | None:
        """The cached principal of ``key``, or None if absent or expired."""
        digest = hash_secret(key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry[1]

    def put(self, key: str, principal: Principal, *, checked_at: float | None = None) -> None:
        """Remember that ``key`` authenticates as ``principal``, as verified at ``checked_at``.

        ``checked_at`` is a :func:`time.monotonic` reading taken before the lookup (default: now).
        """
        if self.ttl <= 0:
            return
        digest = hash_secret(key)
        start = time.monotonic() if checked_at is None else checked_at
        self._entries[digest] = (start + self.ttl, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        """Drop every entry of the key ``key_id`` (after it was revoked)."""
        for digest in [d for d, (_, p) in self._entries.items() if p.key_id == key_id]:
            del self._entries[digest]


class Authenticator:
    """The one place that verifies bearer keys: the cache first, else the database.

    Concurrent lookups of the same uncached key share one database query. Use it from the
    event loop; the query runs in the thread pool.
    """

    def __init__(self, sessions: sessionmaker[Session], cache: KeyCache) -> None:
        self.sessions = sessions
        self.cache = cache
        self._pending: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(self, key: str) -> Principal | None:
        """The principal of ``key``, or None for a malformed, unknown or revoked key."""
        if split_key(key) is None:
            return None
        principal = self.cache.get(key)
        if principal is not None:
            return principal
        digest = hash_secret(key)
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key))
            self._pending[digest] = pending
            pending.add_done_callback(lambda _: self._pending.pop(digest, None))
        return await asyncio.shield(pending)

    async def _lookup(self, key: str) -> Principal | None:
        started = time.monotonic()
        principal = await run_in_threadpool(self._query, key)
        if principal is not None:
            self.cache.put(key, principal, checked_at=started)
        return principal

    def _query(self, key: str) -> Principal | None:
        with self.sessions() as session:
            return authenticate(session, key)

    def forget(self, key_id: str) -> None:
        """Stop trusting cached verifications of ``key_id`` in this process."""
        self.cache.forget(key_id)
