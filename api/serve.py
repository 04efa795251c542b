"""What ``auditor serve`` and ``auditor keys create`` do, behind the command line."""

from __future__ import annotations

from api.settings import Settings
from store.migrate import upgrade


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with the non-None ``overrides`` (command-line flags) on top."""
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def serve(settings: Settings, *, host: str, port: int, access_log: bool = True, workers: bool = True) -> None:
    """Create or upgrade the schema, then run the API until interrupted.

    With ``workers``, a dispatcher runs beside the API on the Ray cluster at
    ``settings.ray_address`` (a local one when unset) and runs the submitted audits.
    """
    import uvicorn

    from api.main import create_app

    upgrade(settings.database_url)
    running = None
    if workers:
        from workers.service import Workers

        running = Workers.from_settings(settings).start()
    try:
        uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log, log_level="info")
    finally:
        if running is not None:
            running.stop()


def run_worker(settings: Settings) -> None:
    """Run a dispatcher alone (no API) until SIGTERM or Ctrl-C, after upgrading the schema."""
    from workers.service import Workers

    upgrade(settings.database_url)
    Workers.from_settings(settings).run_forever()


def issue_key(settings: Settings, tenant: str) -> str:
    """Create an API key for ``tenant`` (and the tenant if new), after upgrading the schema."""
    from api.auth import create_key
    from store.engine import make_engine, make_sessionmaker

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return create_key(session, tenant)
    finally:
        engine.dispose()


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke the API key ``key_id`` (or the key whose id a whole key names), after upgrading the schema.

    Every API process on the database refuses the key within ``auth_cache_seconds`` (at most
    1 s). Returns False if there is no such key; revoking a revoked key returns True and
    keeps its revocation time.
    """
    from api.auth import split_key
    from store import repository
    from store.engine import make_engine, make_sessionmaker

    parts = split_key(key_id.strip())
    key_id = parts[0] if parts is not None else key_id.strip()
    if not repository.is_key_id(key_id):
        return False
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return repository.revoke_api_key(session, key_id) is not None
    finally:
        engine.dispose()
