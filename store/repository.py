"""Every query and write of the service, as functions taking a :class:`~sqlalchemy.orm.Session`.

Each write function is one transaction: it commits what the session had open, works, and
commits before it returns. Functions that read
for a tenant take its ``tenant_id`` and return ``None`` (or raise :class:`NotFound`) for
objects of other tenants, so callers cannot leak them by accident.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import numpy as np
from sqlalchemy import Select, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from store.engine import begin_write
from store.models import (
    CANCELED,
    FAILED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    ApiKey,
    Audit,
    Dataset,
    Report,
    Scan,
    Tenant,
    TrialOutcome,
    is_id,
    new_id,
    utcnow,
)

T = TypeVar("T")
MAX_PAGE = 200


class NotFound(LookupError):
    """An object does not exist, or belongs to another tenant."""


class Conflict(Exception):
    """The request contradicts the object's state (or an earlier request with the same key)."""


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not issue."""


class QuotaExceeded(Exception):
    """Queuing more audits would put the tenant over a quota; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


AuditCost = Callable[[dict[str, Any], int, str], int]     # (config, n, task) -> cost of one audit


@dataclass(frozen=True)
class Quota:
    """Per-tenant limits checked, in the submitting transaction, before audits are queued.

    Attributes
    ----------
    max_queued : int or None
        Most queued audits a tenant may have.
    max_cost : int or None
        Most total ``cost`` over a tenant's queued and running audits.
    cost : callable or None
        ``(config, n, task) -> int``: the cost of one audit of a dataset of ``n`` examples.
    retry_after : int
        Seconds a refused client is told to wait (the ``Retry-After`` header).
    """

    max_queued: int | None = None
    max_cost: int | None = None
    cost: AuditCost | None = None
    retry_after: int = 60


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, newest first; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """A stored trial outcome; ``mask`` is a boolean array over the training examples."""

    trial_key: str
    mask: np.ndarray
    seed: int
    metrics: dict[str, Any]
    created_at: datetime


# --- tenants and keys -------------------------------------------------------------------

def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called ``name``, created if missing."""
    begin_write(session)
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        session.commit()
        return tenant
    tenant = Tenant(name=name)
    session.add(tenant)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(select(Tenant).where(Tenant.name == name)).one()
    return tenant


def add_api_key(session: Session, tenant_id: str, key_id: str, secret_sha256: str) -> ApiKey:
    """Store a key's id and the sha256 of its secret for ``tenant_id``."""
    begin_write(session)
    key = ApiKey(id=key_id, tenant_id=tenant_id, secret_sha256=secret_sha256)
    session.add(key)
    session.commit()
    return key


def get_api_key(session: Session, key_id: str) -> ApiKey | None:
    """An unrevoked key by id."""
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the form of an API key id (16 hex digits)."""
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def list_api_keys(session: Session, tenant_id: str, *, limit: int = 50,
                  cursor: str | None = None) -> Page[ApiKey]:
    """The tenant's keys, revoked ones included, newest first."""
    return _paginate(session, select(ApiKey).where(ApiKey.tenant_id == tenant_id), ApiKey, limit, cursor,
                     id_ok=is_key_id)


def revoke_api_key(session: Session, key_id: str, *, tenant_id: str | None = None) -> ApiKey | None:
    """Revoke a key (of ``tenant_id`` only, when given); revoking a revoked key keeps its time.

    Returns the key, or None if there is no such key (for that tenant).
    """
    begin_write(session)
    scope = [ApiKey.id == key_id] + ([ApiKey.tenant_id == tenant_id] if tenant_id is not None else [])
    session.execute(update(ApiKey).where(*scope, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
    key = session.scalar(select(ApiKey).where(*scope).execution_options(populate_existing=True))
    session.commit()
    return key


# --- datasets ---------------------------------------------------------------------------

def add_dataset(session: Session, *, tenant_id: str, filename: str, size_bytes: int, uri: str,
                summary: dict[str, Any]) -> Dataset:
    """Record an uploaded dataset whose file is already stored at ``uri``.

    ``summary`` is :meth:`auditor.data.Dataset.summary`; its sha256 and shape are also kept
    in columns.
    """
    begin_write(session)
    dataset = Dataset(tenant_id=tenant_id, sha256=summary["sha256"], filename=filename, size_bytes=size_bytes,
                      uri=uri, n=summary["n"], length=summary["length"], channels=summary["channels"],
                      task=summary["task"], summary=summary)
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    """The tenant's dataset, or None."""
    return session.scalar(select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))


def get_datasets(session: Session, tenant_id: str, dataset_ids: Iterable[str]) -> list[Dataset]:
    """The tenant's datasets among ``dataset_ids`` (unknown ids and other tenants' are left out)."""
    return list(session.scalars(select(Dataset).where(Dataset.tenant_id == tenant_id,
                                                      Dataset.id.in_(set(dataset_ids)))))


def list_datasets(session: Session, tenant_id: str, *, limit: int = 50, cursor: str | None = None) -> Page[Dataset]:
    """The tenant's datasets, newest first."""
    return _paginate(session, select(Dataset).where(Dataset.tenant_id == tenant_id), Dataset, limit, cursor)


def uri_in_use(session: Session, uri: str) -> bool:
    """Whether any dataset row points at ``uri``."""
    return session.scalar(select(func.count()).select_from(Dataset).where(Dataset.uri == uri)) > 0


# --- audits: submission and queries -------------------------------------------------------

def request_fingerprint(dataset_id: str, config: dict[str, Any], scan_id: str | None = None) -> str:
    """sha256 of a canonical form of a submission, to compare replays of an idempotency key."""
    canonical = json.dumps({"dataset_id": dataset_id, "config": config, "scan_id": scan_id},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_audit(session: Session, *, tenant_id: str, dataset_id: str, config: dict[str, Any],
                 idempotency_key: str | None = None, scan_id: str | None = None,
                 quota: Quota | None = None) -> tuple[Audit, bool]:
    """Queue an audit of the tenant's dataset; return ``(audit, created)``.

    With an ``idempotency_key``, a repeated submission returns the audit of the first one
    (``created`` False), also under concurrency: the unique constraint on
    (tenant, key) decides the race and the losers read the winner's row. A replay is
    answered whatever the ``quota``.

    Raises
    ------
    NotFound
        The dataset does not exist for this tenant.
    Conflict
        The key was used before with a different dataset or config.
    QuotaExceeded
        Queuing it would put the tenant over ``quota``.
    """
    begin_write(session)
    fingerprint = request_fingerprint(dataset_id, config, scan_id)
    if idempotency_key is not None:
        existing = _audit_by_key(session, tenant_id, idempotency_key)
        if existing is not None:
            session.commit()
            return _replay(existing, fingerprint), False
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset is None:
        session.rollback()
        raise NotFound(f"dataset {dataset_id!r} not found")
    if quota is not None:
        _check_quota(session, tenant_id, quota, [(config, dataset.n, dataset.task)])
    audit = Audit(tenant_id=tenant_id, dataset_id=dataset_id, config=config, scan_id=scan_id,
                  idempotency_key=idempotency_key, request_sha256=fingerprint)
    session.add(audit)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _audit_by_key(session, tenant_id, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, fingerprint), False
    return audit, True


def _check_quota(session: Session, tenant_id: str, quota: Quota, new: list[tuple[dict[str, Any], int, str]]) -> None:
    """Raise :class:`QuotaExceeded` (rolling back) if queuing ``new`` (config, n, task) audits
    would put the tenant over ``quota``.

    The tenant's row is locked first (PostgreSQL; SQLite's write transaction already
    serializes), so concurrent submissions of one tenant are counted one after another.
    """
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    active = session.execute(select(Audit.status, Audit.config, Dataset.n, Dataset.task)
                             .join(Dataset, Dataset.id == Audit.dataset_id)
                             .where(Audit.tenant_id == tenant_id, Audit.status.in_((QUEUED, RUNNING)))).all()
    queued = sum(1 for row in active if row.status == QUEUED)
    if quota.max_queued is not None and queued + len(new) > quota.max_queued:
        session.rollback()
        raise QuotaExceeded(f"quota exceeded: the tenant has {queued} queued audit(s) and may have at most "
                            f"{quota.max_queued}; {len(new)} more would go over", retry_after=quota.retry_after)
    if quota.max_cost is not None and quota.cost is not None:
        used = sum(quota.cost(row.config, row.n, row.task) for row in active)
        adding = sum(quota.cost(config, n, task) for config, n, task in new)
        if used + adding > quota.max_cost:
            session.rollback()
            raise QuotaExceeded(f"quota exceeded: the tenant's queued and running audits cost {used} trial-steps "
                                f"and may cost at most {quota.max_cost}; {adding} more would go over",
                                retry_after=quota.retry_after)


def _audit_by_key(session: Session, tenant_id: str, key: str) -> Audit | None:
    return session.scalar(select(Audit).where(Audit.tenant_id == tenant_id, Audit.idempotency_key == key))


def _replay(existing: Audit, fingerprint: str) -> Audit:
    if existing.request_sha256 != fingerprint:
        raise Conflict("Idempotency-Key was already used with a different request body")
    return existing


def get_audit(session: Session, tenant_id: str, audit_id: str) -> Audit | None:
    """The tenant's audit, or None."""
    return session.scalar(select(Audit).where(Audit.id == audit_id, Audit.tenant_id == tenant_id))


def list_audits(session: Session, tenant_id: str, *, status: str | None = None, dataset_id: str | None = None,
                scan_id: str | None = None, limit: int = 50, cursor: str | None = None) -> Page[Audit]:
    """The tenant's audits, newest first, optionally filtered."""
    stmt = select(Audit).where(Audit.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Audit.status == status)
    if dataset_id is not None:
        stmt = stmt.where(Audit.dataset_id == dataset_id)
    if scan_id is not None:
        stmt = stmt.where(Audit.scan_id == scan_id)
    return _paginate(session, stmt, Audit, limit, cursor)


def get_report(session: Session, audit_id: str) -> Report | None:
    """The report of a succeeded audit (the caller checks the tenant through the audit)."""
    return session.get(Report, audit_id)


def request_cancel(session: Session, tenant_id: str, audit_id: str) -> Audit:
    """Cancel a queued audit at once, or ask the worker of a running one to stop.

    Canceling a canceled audit is a no-op.

    Raises
    ------
    NotFound
        No such audit for this tenant.
    Conflict
        The audit already succeeded or failed.
    """
    begin_write(session)
    now = utcnow()
    session.execute(update(Audit).where(Audit.id == audit_id, Audit.tenant_id == tenant_id, Audit.status == QUEUED)
                    .values(status=CANCELED, cancel_requested=True, finished_at=now, updated_at=now))
    session.execute(update(Audit).where(Audit.id == audit_id, Audit.tenant_id == tenant_id, Audit.status == RUNNING)
                    .values(cancel_requested=True, updated_at=now))
    audit = session.scalar(select(Audit).where(Audit.id == audit_id, Audit.tenant_id == tenant_id)
                           .execution_options(populate_existing=True))
    session.commit()
    if audit is None:
        raise NotFound(f"audit {audit_id!r} not found")
    if audit.status in (SUCCEEDED, FAILED):
        raise Conflict(f"audit {audit_id} already {audit.status}; nothing to cancel")
    return audit


def count_audits_by_status(session: Session) -> dict[str, int]:
    """Number of audits in each status, over all tenants (zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in session.execute(select(Audit.status, func.count()).group_by(Audit.status)):
        counts[status] = count
    return counts


# --- scans ----------------------------------------------------------------------------------

def create_scan(session: Session, *, tenant_id: str, dataset_ids: Sequence[str],
                config: dict[str, Any], quota: Quota | None = None) -> tuple[Scan, list[Audit]]:
    """Queue one audit per dataset under a new scan, all or nothing.

    Raises
    ------
    NotFound
        Some datasets do not exist for this tenant (the message lists them).
    QuotaExceeded
        Queuing them would put the tenant over ``quota``.
    """
    begin_write(session)
    found = {row.id: row for row in session.execute(select(Dataset.id, Dataset.n, Dataset.task)
                                                    .where(Dataset.tenant_id == tenant_id,
                                                           Dataset.id.in_(set(dataset_ids))))}
    missing = [d for d in dataset_ids if d not in found]
    if missing:
        session.rollback()
        raise NotFound(f"dataset(s) not found: {', '.join(missing)}")
    if quota is not None:
        _check_quota(session, tenant_id, quota, [(config, found[d].n, found[d].task) for d in dataset_ids])
    scan = Scan(id=new_id(), tenant_id=tenant_id, config=config)
    audits = [Audit(tenant_id=tenant_id, dataset_id=d, scan_id=scan.id, config=config,
                    request_sha256=request_fingerprint(d, config, scan.id)) for d in dataset_ids]
    session.add(scan)
    session.flush()
    session.add_all(audits)
    session.commit()
    return scan, audits


def get_scan(session: Session, tenant_id: str, scan_id: str) -> Scan | None:
    """The tenant's scan, or None."""
    return session.scalar(select(Scan).where(Scan.id == scan_id, Scan.tenant_id == tenant_id))


def list_scans(session: Session, tenant_id: str, *, limit: int = 50, cursor: str | None = None) -> Page[Scan]:
    """The tenant's scans, newest first."""
    return _paginate(session, select(Scan).where(Scan.tenant_id == tenant_id), Scan, limit, cursor)


def scan_audits(session: Session, scan_id: str) -> list[Audit]:
    """The audits of a scan, in submission order."""
    return list(session.scalars(select(Audit).where(Audit.scan_id == scan_id).order_by(Audit.created_at, Audit.id)))


def flagged_counts(session: Session, audit_ids: Iterable[str]) -> dict[str, int]:
    """Number of flagged examples in the report of each succeeded audit among ``audit_ids``."""
    reports = session.execute(select(Report.audit_id, Report.body).where(Report.audit_id.in_(list(audit_ids))))
    return {audit_id: len(body.get("flagged") or []) for audit_id, body in reports}


# --- audits: the worker side ------------------------------------------------------------------

HEARTBEAT_RUN, HEARTBEAT_CANCEL, HEARTBEAT_LOST = "run", "cancel", "lost"


CLAIM_LOCK = 0x61756469_74636c6d     # PostgreSQL advisory lock key that serializes claims


def claim_next_audit(session: Session, worker_id: str, *,
                     max_running_per_tenant: int | None = None) -> Audit | None:
    """Move the next queued audit to ``running`` for ``worker_id`` and return it.

    Fair between tenants: the next audit is the oldest queued audit of a tenant with the
    fewest running audits, and never one of a tenant that already runs
    ``max_running_per_tenant`` (None: no limit), counted over every dispatcher.

    Safe with many dispatchers: on PostgreSQL claims take a transaction-level advisory
    lock, so each counts the running audits after the previous claim committed, and skip
    rows another transaction has locked (``FOR UPDATE SKIP LOCKED``); SQLite serializes
    writers.
    """
    begin_write(session)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
    other = aliased(Audit)
    running = (select(func.count(other.id)).where(other.tenant_id == Audit.tenant_id, other.status == RUNNING)
               .correlate(Audit).scalar_subquery())
    stmt = select(Audit.id).where(Audit.status == QUEUED)
    if max_running_per_tenant is not None:
        stmt = stmt.where(running < max_running_per_tenant)
    candidate = session.scalar(stmt.order_by(running, Audit.created_at, Audit.id).limit(1)
                               .with_for_update(skip_locked=True))
    if candidate is None:
        session.commit()
        return None
    return _claim(session, candidate, worker_id)


def claim_audit(session: Session, audit_id: str, worker_id: str) -> Audit | None:
    """Move one queued audit to ``running`` for ``worker_id``; None if it is not queued."""
    begin_write(session)
    return _claim(session, audit_id, worker_id)


def _claim(session: Session, audit_id: str, worker_id: str) -> Audit | None:
    now = utcnow()
    claimed = session.execute(update(Audit).where(Audit.id == audit_id, Audit.status == QUEUED)
                              .values(status=RUNNING, worker_id=worker_id, started_at=now,
                                      heartbeat_at=now, updated_at=now)).rowcount
    audit = None
    if claimed == 1:
        audit = session.scalars(select(Audit).where(Audit.id == audit_id)
                                .execution_options(populate_existing=True)).one()
    session.commit()
    return audit


def heartbeat(session: Session, audit_id: str, worker_id: str) -> str:
    """Record that ``worker_id`` is still running the audit.

    Returns
    -------
    str
        ``"run"`` to go on, ``"cancel"`` when a cancel was requested (stop, then call
        :func:`mark_canceled`), ``"lost"`` when the audit is no longer this worker's.
    """
    begin_write(session)
    now = utcnow()
    row = session.execute(update(Audit).where(*_owned(audit_id, worker_id))
                          .values(heartbeat_at=now, updated_at=now)
                          .returning(Audit.cancel_requested)).first()
    session.commit()
    if row is None:
        return HEARTBEAT_LOST
    return HEARTBEAT_CANCEL if row[0] else HEARTBEAT_RUN


def requeue_stale(session: Session, older_than: timedelta) -> list[str]:
    """Requeue running audits whose last heartbeat is older than ``older_than``.

    Those with a pending cancel request become ``canceled`` instead. Returns the ids of the
    requeued audits. Stored outcomes stay, so a resumed audit skips what was trained.
    """
    begin_write(session)
    now = utcnow()
    stale = and_(Audit.status == RUNNING, Audit.heartbeat_at < now - older_than)
    session.execute(update(Audit).where(stale, Audit.cancel_requested.is_(True))
                    .values(status=CANCELED, finished_at=now, updated_at=now))
    ids = session.scalars(update(Audit).where(stale).values(status=QUEUED, worker_id=None, updated_at=now)
                          .returning(Audit.id)).all()
    session.commit()
    return list(ids)


def release_audit(session: Session, audit_id: str, worker_id: str) -> bool:
    """Give a running audit back to the queue (its worker is shutting down); False if it
    was not running for ``worker_id``. Stored outcomes stay for whoever claims it next."""
    begin_write(session)
    updated = session.execute(update(Audit).where(*_owned(audit_id, worker_id))
                              .values(status=QUEUED, worker_id=None, updated_at=utcnow())).rowcount
    session.commit()
    return updated == 1


def set_progress(session: Session, audit_id: str, progress: float, *, trials_done: int | None = None,
                 stage: str | None = None, worker_id: str | None = None) -> bool:
    """Update a running audit's progress (0 to 1); False if it is not running (for this worker)."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be within [0, 1], got {progress}")
    begin_write(session)
    values: dict[str, Any] = {"progress": progress, "updated_at": utcnow()}
    if trials_done is not None:
        values["trials_done"] = trials_done
    if stage is not None:
        values["stage"] = stage
    updated = session.execute(update(Audit).where(*_owned(audit_id, worker_id)).values(**values)).rowcount
    session.commit()
    return updated == 1


def finish_audit(session: Session, audit_id: str, *, report: dict[str, Any], html: str,
                 worker_id: str | None = None, trials_done: int | None = None) -> bool:
    """Mark a running audit succeeded and store its report; False if it was not running.

    ``report`` is stored as JSON (NaN and infinities as null), ``html`` as text;
    ``trials_done`` (the final count) replaces the last progress report's.
    """
    begin_write(session)
    now = utcnow()
    values: dict[str, Any] = {"status": SUCCEEDED, "progress": 1.0, "finished_at": now, "updated_at": now}
    if trials_done is not None:
        values["trials_done"] = trials_done
    updated = session.execute(update(Audit).where(*_owned(audit_id, worker_id)).values(**values)).rowcount
    if updated == 1:
        session.add(Report(audit_id=audit_id, body=report, html=html))
    session.commit()
    return updated == 1


def fail_audit(session: Session, audit_id: str, error: str, *, worker_id: str | None = None) -> bool:
    """Mark a queued or running audit failed with ``error``; False if it had finished."""
    begin_write(session)
    now = utcnow()
    where = _owned(audit_id, worker_id) if worker_id else (Audit.id == audit_id, Audit.status.in_((QUEUED, RUNNING)))
    updated = session.execute(update(Audit).where(*where)
                              .values(status=FAILED, error=error, finished_at=now, updated_at=now)).rowcount
    session.commit()
    return updated == 1


def mark_canceled(session: Session, audit_id: str, *, worker_id: str | None = None) -> bool:
    """Mark a running audit canceled (after its worker stopped); False if it was not running."""
    begin_write(session)
    now = utcnow()
    updated = session.execute(update(Audit).where(*_owned(audit_id, worker_id))
                              .values(status=CANCELED, finished_at=now, updated_at=now)).rowcount
    session.commit()
    return updated == 1


def _owned(audit_id: str, worker_id: str | None) -> tuple:
    conditions = (Audit.id == audit_id, Audit.status == RUNNING)
    return conditions + ((Audit.worker_id == worker_id,) if worker_id is not None else ())


# --- trial outcomes ------------------------------------------------------------------------------

def store_outcomes(session: Session, audit_id: str,
                   outcomes: Iterable[tuple[str, Sequence[bool] | np.ndarray, int, dict[str, Any]]]) -> int:
    """Store ``(trial_key, mask, seed, metrics)`` outcomes; return how many were new.

    An outcome whose (audit, trial_key) is already stored is skipped, not an error, so a
    retried or duplicated chunk of trials is harmless. ``metrics`` may hold numpy values;
    NaN and infinities are stored as null (see :func:`store.engine.json_dumps`).
    """
    rows = []
    for trial_key, mask, seed, metrics in outcomes:
        bits = np.asarray(mask, dtype=bool).ravel()
        rows.append({"audit_id": audit_id, "trial_key": trial_key, "mask": np.packbits(bits).tobytes(),
                     "mask_size": int(bits.size), "seed": int(seed), "metrics": metrics, "created_at": utcnow()})
    if not rows:
        return 0
    begin_write(session)
    stmt = _insert_ignore(session, TrialOutcome).returning(TrialOutcome.trial_key)
    inserted = len(session.execute(stmt, rows).all())
    session.commit()
    return inserted


def store_outcome(session: Session, audit_id: str, trial_key: str, mask: Sequence[bool] | np.ndarray,
                  seed: int, metrics: dict[str, Any]) -> bool:
    """Store one outcome; False if (audit, trial_key) was already stored."""
    return store_outcomes(session, audit_id, [(trial_key, mask, seed, metrics)]) == 1


def list_outcomes(session: Session, audit_id: str) -> list[Outcome]:
    """Every stored outcome of an audit, in the order they were stored."""
    rows = session.scalars(select(TrialOutcome).where(TrialOutcome.audit_id == audit_id)
                           .order_by(TrialOutcome.created_at, TrialOutcome.trial_key))
    return [Outcome(trial_key=r.trial_key, seed=r.seed, metrics=r.metrics, created_at=r.created_at,
                    mask=np.unpackbits(np.frombuffer(r.mask, dtype=np.uint8), count=r.mask_size).astype(bool))
            for r in rows]


def _insert_ignore(session: Session, model):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"unsupported database: {dialect}")
    return insert(model).on_conflict_do_nothing()


# --- pagination --------------------------------------------------------------------------------

def _paginate(session: Session, stmt: Select, model, limit: int, cursor: str | None, *,
              id_ok: Callable[[str], bool] = is_id) -> Page:
    limit = max(1, min(int(limit), MAX_PAGE))
    if cursor:
        created_at, last_id = decode_cursor(cursor, id_ok=id_ok)
        stmt = stmt.where(or_(model.created_at < created_at,
                              and_(model.created_at == created_at, model.id < last_id)))
    rows = list(session.scalars(stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None)


def encode_cursor(created_at: datetime, last_id: str) -> str:
    """An opaque cursor for the position after (created_at, id)."""
    raw = json.dumps([created_at.isoformat(), last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, id_ok: Callable[[str], bool] = is_id) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; raises :class:`InvalidCursor` for anything else.

    The time comes back in UTC: a well-formed time that cannot be converted (such as
    ``0001-01-01T00:00:00+23:59``, before year 1 in UTC) is invalid too.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, last_id = json.loads(raw)
        stamp = datetime.fromisoformat(created)
        if not isinstance(last_id, str) or not id_ok(last_id) or stamp.tzinfo is None:
            raise ValueError
        stamp = stamp.astimezone(UTC)
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("invalid cursor; pass next_cursor from a previous page") from None
    return stamp, last_id
