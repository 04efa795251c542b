"""The API under uvicorn on a free loopback port, once per backend (SQLite, PostgreSQL).

Every test gets a fresh tenant and key, so tests never see each other's objects.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import create_key, split_key
from apitools import MAX_EXPANDED, MAX_UPLOAD, upload, valid_npz
from api.main import create_app
from api.settings import Settings
from store.migrate import upgrade
from store.models import ApiKey, Audit, Dataset
from store.scratch import scratch_database



@dataclass
class Backend:
    name: str
    database_url: str
    base_url: str
    data_dir: Path
    sessions: sessionmaker[Session]

    def new_key(self, tenant: str | None = None) -> str:
        with self.sessions() as session:
            return create_key(session, tenant or f"tenant-{uuid.uuid4().hex[:8]}")

    def tenant_of(self, key: str) -> str:
        with self.sessions() as session:
            return session.get(ApiKey, split_key(key)[0]).tenant_id

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=30)

    def tenant_counts(self, tenant_id: str) -> tuple[int, int]:
        """(datasets, audits) stored for a tenant."""
        with self.sessions() as session:
            datasets = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant_id == tenant_id))
            audits = session.scalar(select(func.count()).select_from(Audit).where(Audit.tenant_id == tenant_id))
        return datasets, audits

    def files(self) -> set[Path]:
        """Every file under the data directory."""
        return {p for p in self.data_dir.rglob("*") if p.is_file()}


class LiveServer:
    """Run an ASGI app under uvicorn in a background thread on a free 127.0.0.1 port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.base_url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory) -> Iterator[Backend]:
    directory = tmp_path_factory.mktemp(f"api-{request.param}")
    with scratch_database(request.param, directory) as url:
        upgrade(url)
        settings = Settings(database_url=url, data_dir=directory / "data", max_upload_bytes=MAX_UPLOAD,
                            max_dataset_bytes=MAX_EXPANDED)
        app = create_app(settings)
        with LiveServer(app) as server:
            yield Backend(request.param, url, server.base_url, settings.data_dir, app.state.sessionmaker)


@pytest.fixture
def serve(backend) -> Iterator[Callable[..., tuple[str, object]]]:
    """Start more servers on the backend's database: ``serve(**settings) -> (base_url, app)``."""
    with ExitStack() as stack:
        def start(**overrides) -> tuple[str, object]:
            settings = Settings(**{"database_url": backend.database_url, "data_dir": backend.data_dir,
                                   "max_upload_bytes": MAX_UPLOAD, "max_dataset_bytes": MAX_EXPANDED, **overrides})
            app = create_app(settings)
            return stack.enter_context(LiveServer(app)).base_url, app

        yield start


@pytest.fixture
def key(backend) -> str:
    return backend.new_key()


@pytest.fixture
def api(backend, key) -> Iterator[httpx.Client]:
    """A client authenticated as a fresh tenant."""
    with backend.client(key) as client:
        yield client


@pytest.fixture
def other_api(backend) -> Iterator[httpx.Client]:
    """A client of a second, unrelated tenant."""
    with backend.client(backend.new_key()) as client:
        yield client


@pytest.fixture
def dataset_id(api) -> str:
    response = upload(api, valid_npz(seed=int(time.time_ns() % 1000)))
    assert response.status_code == 201, response.text
    return response.json()["id"]
