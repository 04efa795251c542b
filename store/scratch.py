"""Throw-away databases (SQLite files, PostgreSQL databases) for tests and benchmarks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from store.engine import normalize_url

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_server_url() -> str:
    """The PostgreSQL server used for scratch databases: ``AUDITOR_TEST_POSTGRES_URL`` or local."""
    return os.environ.get("AUDITOR_TEST_POSTGRES_URL", LOCAL_POSTGRES)


@contextmanager
def scratch_postgres(server_url: str | None = None, prefix: str = "auditor_scratch") -> Iterator[str]:
    """Create a uniquely named, empty database on a PostgreSQL server; drop it on exit.

    Parameters
    ----------
    server_url : str, optional
        Any database URL on the server with rights to create databases; its database is
        used as the maintenance connection. Defaults to :func:`postgres_server_url`.
    prefix : str
        Start of the new database's name.

    Yields
    ------
    str
        The URL of the new database.
    """
    server: URL = normalize_url(server_url or postgres_server_url())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def scratch_database(backend: str, directory: str | os.PathLike) -> Iterator[str]:
    """A fresh empty database: ``"sqlite"`` in ``directory``, or ``"postgresql"`` on the server.

    Yields its URL; a PostgreSQL database is dropped on exit.
    """
    if backend == "sqlite":
        yield f"sqlite:///{os.path.join(os.fspath(directory), 'auditor.db')}"
    elif backend == "postgresql":
        with scratch_postgres() as url:
            yield url
    else:
        raise ValueError(f"unknown backend: {backend}")
