"""The FastAPI application: ``create_app(settings)`` wires routers, errors, limits and metrics."""

from __future__ import annotations

import base64
import gc
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from api.auth import Authenticator, KeyCache
from api.errors import edge_responses, install_handlers
from api.metrics import Metrics
from api.middleware import EdgeGuard, ErrorBoundary, MetricsMiddleware, SecurityHeaders, TokenBuckets
from api.routers import PREFIX, audits, datasets, health, keys, scans
from api.settings import Settings
from store.blobs import ensure_private_dir
from store.engine import make_engine, make_read_sessionmaker, make_sessionmaker

CLOSE_THREADS = 4  # threads that return connections to the pool, apart from the main thread pool
MULTIPART_SLACK = 64 * 1024  # room for multipart headers around an upload at the size limit
OPENAPI_URL = f"{PREFIX}/openapi.json"
DOCS_URL = f"{PREFIX}/docs"
PUBLIC_PATHS = frozenset({f"{PREFIX}/health", f"{PREFIX}/metrics", OPENAPI_URL, DOCS_URL})
UPLOAD_ROUTES = (("POST", f"{PREFIX}/datasets"),)  # the only routes that take more than max_json_bytes


def _version() -> str:
    try:
        return version("auditor")
    except PackageNotFoundError:
        return "0.0.0"


def swagger_page(title: str) -> tuple[bytes, str]:
    """The Swagger UI page and the Content-Security-Policy that lets it work.

    The page loads its script and styles from cdn.jsdelivr.net and its icon from
    fastapi.tiangolo.com; its one inline script is allowed by its sha256.
    """
    html = get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{title} - API").body
    hashes = " ".join("'sha256-%s'" % base64.b64encode(hashlib.sha256(script).digest()).decode()
                      for script in re.findall(rb"<script>(.*?)</script>", html, re.S))
    csp = (f"default-src 'none'; script-src https://cdn.jsdelivr.net {hashes}; "
           "style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src data: https://fastapi.tiangolo.com; "
           "connect-src 'self'; frame-ancestors 'none'")
    return html, csp


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
        # What exists once the app is built lives as long as the server: keep it out of the
        # collector's scans, and collect the young generation less often (every 20 000 new
        # objects, not 700). A request makes a few thousand short-lived objects, so at the
        # default a collection ran every few requests, and its pauses were the status route's
        # slowest answers (benchmarks/load_status.py at 50 clients: p99 186 -> about 100 ms).
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        yield
        engine.dispose()

    app = FastAPI(title="auditor", version=_version(), lifespan=lifespan,
                  description="Audit sequence training sets for clean-label poisons aimed at state-space models.",
                  openapi_url=OPENAPI_URL, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessions
    app.state.close_limiter = anyio.CapacityLimiter(CLOSE_THREADS)  # see api.deps.get_session
    app.state.read_sessionmaker = make_read_sessionmaker(engine)      # see api.deps.read_in_thread
    # reads in flight at once: as many as the pool keeps open, so that none opens (and then
    # closes) an overflow connection, which costs a PostgreSQL server a process per request
    app.state.read_limiter = anyio.CapacityLimiter(settings.db_pool_size)
    app.state.metrics = Metrics(sessions)
    app.state.authenticator = Authenticator(sessions, KeyCache(settings.auth_cache_seconds))
    install_handlers(app)
    app.include_router(health.router, responses=edge_responses(keyed=False))
    for module in (datasets, audits, scans, keys):
        app.include_router(module.router, responses=edge_responses(keyed=True))
    docs_html, docs_csp = swagger_page(app.title)

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(docs_html)

    _install_middleware(app, settings, docs_csp)
    return app


def _install_middleware(app: FastAPI, settings: Settings, docs_csp: str) -> None:
    """From the outside in: security headers, error boundary, metrics, then the guard."""
    upload_limit = settings.max_upload_bytes + MULTIPART_SLACK
    app.add_middleware(EdgeGuard, authenticator=app.state.authenticator, public_paths=PUBLIC_PATHS,
                       body_limits=dict.fromkeys(UPLOAD_ROUTES, upload_limit),
                       default_body_limit=settings.max_json_bytes,
                       key_limits=_buckets(settings.rate_limit_per_second, settings.rate_limit_burst),
                       failure_limits=_buckets(settings.auth_failures_per_second, settings.auth_failures_burst))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(ErrorBoundary)
    app.add_middleware(SecurityHeaders, page_csp={DOCS_URL: docs_csp})


def _buckets(rate: float, burst: int) -> TokenBuckets | None:
    return TokenBuckets(rate, burst) if rate > 0 else None
