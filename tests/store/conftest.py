"""Sample rows in the migrated databases of ``tests/conftest.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from store import repository
from store.models import Dataset, Tenant

SUMMARY = {"sha256": "ab" * 32, "n": 13, "length": 6, "channels": 1, "task": "regression", "n_val": None,
           "length_val": None, "has_ground_truth": False}


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
