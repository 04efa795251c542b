"""The FastAPI application: ``create_app(settings)`` wires routers, errors, limits and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from api.auth import KeyCache
from api.errors import install_handlers
from api.metrics import Metrics
from api.middleware import BodySizeLimit, MetricsMiddleware
from api.routers import PREFIX, audits, datasets, health, scans
from api.settings import Settings
from store.blobs import ensure_private_dir
from store.engine import make_engine, make_sessionmaker

MULTIPART_SLACK = 64 * 1024  # room for multipart headers around an upload at the size limit


def _version() -> str:
    try:
        return version("auditor")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: from the environment).

    The schema is not created here; ``auditor serve`` runs the migrations first.
    """
    settings = settings or Settings()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = make_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        ensure_private_dir(settings.data_dir)
        yield
        engine.dispose()

    app = FastAPI(title="auditor", version=_version(), lifespan=lifespan,
                  description="Audit sequence training sets for clean-label poisons aimed at state-space models.",
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessions
    app.state.metrics = Metrics(sessions)
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    install_handlers(app)
    for module in (health, datasets, audits, scans):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
