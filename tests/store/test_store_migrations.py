"""Alembic: upgrade to head and no drift between the models and the migrations, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from store import migrate
from store.engine import make_engine
from store.scratch import scratch_database

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"tenants", "api_keys", "datasets", "scans", "audits", "trial_outcomes", "reports", "alembic_version"}


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alembic", "-x", f"database_url={url}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_alembic_cli_upgrade_check_downgrade(backend, tmp_path):
    with scratch_database(backend, tmp_path) as url:
        for args in (("upgrade", "head"), ("check",), ("downgrade", "base"), ("upgrade", "head"), ("check",)):
            result = _alembic(*args, url=url)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "No new upgrade operations detected" in result.stdout + result.stderr
        engine = make_engine(url)
        assert set(inspect(engine).get_table_names()) == TABLES
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_from_code_is_idempotent_and_independent_of_cwd(backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with scratch_database(backend, tmp_path / "nested" / "dir") as url:
        migrate.upgrade(url)
        migrate.upgrade(url)
        migrate.check(url)


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() > 0
    engine.dispose()


def test_alembic_default_url_comes_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path}/env.db"
    env = {**os.environ, "AUDITOR_DATABASE_URL": url}
    result = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env.db").is_file()
