"""Fixtures shared by the test packages: a migrated database per backend (SQLite and
PostgreSQL), created once per session, and its sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.engine import make_engine, make_sessionmaker
from store.migrate import upgrade
from store.scratch import scratch_database


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    with scratch_database(request.param, tmp_path_factory.mktemp(f"db-{request.param}")) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sessions(database_url) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url, pool_size=20)
    yield make_sessionmaker(engine)
    engine.dispose()
