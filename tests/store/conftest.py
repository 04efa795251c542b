"""A migrated database per backend (SQLite, PostgreSQL), with sessions and sample rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import repository
from store.engine import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.models import Dataset, Tenant
from store.scratch import scratch_database

SUMMARY = {"sha256": "ab" * 32, "n": 13, "length": 6, "channels": 1, "task": "regression", "n_val": None,
           "length_val": None, "has_ground_truth": False}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    with scratch_database(request.param, tmp_path_factory.mktemp(f"store-{request.param}")) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sessions(database_url) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url, pool_size=20)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def session(sessions) -> Iterator[Session]:
    with sessions() as session:
        yield session


@pytest.fixture
def tenant(session) -> Tenant:
    return repository.get_or_create_tenant(session, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def dataset(session, tenant) -> Dataset:
    return repository.add_dataset(session, tenant_id=tenant.id, filename="d.npz", size_bytes=10,
                                  uri="file:///nowhere/d.npz", summary=SUMMARY)


@pytest.fixture
def empty_queue(session) -> None:
    """Claim whatever other tests left queued, so claims in this test see only its audits."""
    while repository.claim_next_audit(session, "drain") is not None:
        pass
