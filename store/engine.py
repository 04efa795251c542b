"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///./auditor-data/auditor.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "auditor_write"  # connection option: this transaction will write


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick the drivers this project ships.

    ``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://`` (psycopg 3).
    """
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` names a SQLite database."""
    return normalize_url(url).get_backend_name() == "sqlite"


def json_dumps(value: Any) -> str:
    """JSON for the database: numpy values become Python ones, NaN and infinities become null.

    JSON has no NaN; PostgreSQL refuses it and SQLite would store an invalid document, so
    both backends store null instead.
    """
    return json.dumps(_plain(value), allow_nan=False, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def make_engine(url: str | URL = DEFAULT_DATABASE_URL, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine for ``url``.

    JSON columns are written with :func:`json_dumps`. SQLite gets WAL journaling, enforced
    foreign keys and a busy timeout. Transactions
    opened by :func:`begin_write` start with ``BEGIN IMMEDIATE``, taking the write lock up
    front, so their reads followed by writes never fail on a lock upgrade under
    concurrency; other transactions are deferred and read concurrently. The parent
    directory of a SQLite file is created if missing (mode 0700), and the file itself
    (mode 0600: the database holds the tenants' key hashes and reports).

    Parameters
    ----------
    url : str or URL
        SQLAlchemy database URL.
    pool_size : int
        Connections kept open; as many again may overflow.
    echo : bool
        Log every statement.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, echo=echo,
                             json_serializer=json_dumps)
    database = parsed.database
    pool = {}
    if database and database != ":memory:" and not database.startswith("file:"):
        create_private_file(Path(database).expanduser())
        pool = {"pool_size": pool_size, "max_overflow": pool_size}
    engine = create_engine(parsed, echo=echo, json_serializer=json_dumps, **pool,
                           connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _install_sqlite_pragmas(engine)
    return engine


def create_private_file(path: Path) -> None:
    """Create the file ``path`` readable by its owner alone (0600) if it is missing, and its
    missing parent directory likewise (0700). Existing files and directories are left as
    they are. SQLite creates its ``-wal`` and ``-shm`` files with the database's mode."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _install_sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        mode = "IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def begin_write(session: Session) -> None:
    """Start a transaction that will write; commit the session's open one first.

    On SQLite the new transaction takes the write lock at once (waiting up to the busy
    timeout); on PostgreSQL it is an ordinary transaction.
    """
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={WRITE_OPTION: True})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """A session factory for requests that only read, one statement each.

    On PostgreSQL its connections run in autocommit: a single SELECT is its own transaction,
    so a read costs one round trip instead of three (BEGIN, the query, and the ROLLBACK when
    the session closes). SQLite has no round trips to save and keeps its own transaction
    handling (see :func:`make_engine`). Never write through these sessions.
    """
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    return make_sessionmaker(engine)
