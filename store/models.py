"""Tables: tenants, API keys, datasets, scans, audits, trial outcomes and reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "running", "succeeded", "failed", "canceled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)
FINISHED = (SUCCEEDED, FAILED, CANCELED)


def new_id() -> str:
    """A new opaque identifier (32 hex characters)."""
    return uuid.uuid4().hex


def is_id(value: str) -> bool:
    """Whether ``value`` has the form of an id from :func:`new_id` (checked before any query)."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def _id() -> Mapped[str]:
    return mapped_column(String(32), primary_key=True, default=new_id)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


def _tenant_fk() -> Mapped[str]:
    return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    """An API key; only the sha256 of its secret part is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = _tenant_fk()
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_tenant_id", "tenant_id"),)


class Dataset(Base):
    """An uploaded dataset: metadata plus where its (content-addressed) file lives."""

    __tablename__ = "datasets"

    id: Mapped[str] = _id()
    tenant_id: Mapped[str] = _tenant_fk()
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    uri: Mapped[str] = mapped_column(String(1024))
    n: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    summary: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()

    __table_args__ = (Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),)


class Scan(Base):
    """A batch of audits: many datasets, one config."""

    __tablename__ = "scans"

    id: Mapped[str] = _id()
    tenant_id: Mapped[str] = _tenant_fk()
    config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()

    __table_args__ = (Index("ix_scans_tenant_created", "tenant_id", "created_at", "id"),)


class Audit(Base):
    """One audit of one dataset: its config, lifecycle and progress."""

    __tablename__ = "audits"

    id: Mapped[str] = _id()
    tenant_id: Mapped[str] = _tenant_fk()
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    scan_id: Mapped[str | None] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    config: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    trials_done: Mapped[int] = mapped_column(Integer, default=0)
    stage: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in STATUSES)})", name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        Index("ix_audits_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_audits_status_created", "status", "created_at"),
    )


class TrialOutcome(Base):
    """What one trial (mask, seed) of an audit showed; keyed by (audit, trial)."""

    __tablename__ = "trial_outcomes"

    audit_id: Mapped[str] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True)
    trial_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    mask: Mapped[bytes] = mapped_column(LargeBinary)
    mask_size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = _created()


class Report(Base):
    """The final report of a succeeded audit, as JSON and as HTML."""

    __tablename__ = "reports"

    audit_id: Mapped[str] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True)
    body: Mapped[dict[str, Any]]
    html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
