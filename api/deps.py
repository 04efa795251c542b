"""Typed dependencies: the settings, a database session and the calling principal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import Principal
from api.middleware import PRINCIPAL_SCOPE_KEY
from api.settings import Settings

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="an API key from `auditor keys create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request, closed after the response.

    Creating a session does no I/O, so it happens on the event loop; only closing one that
    used a connection (which returns it to the pool) goes to a thread, under a limiter of
    its own: were it to wait for the main thread pool, whose threads may all be waiting for
    a pooled connection, neither would ever get one.
    """
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction():
            await anyio.to_thread.run_sync(session.close, limiter=request.app.state.close_limiter)
        else:
            session.close()



async def read_in_thread(request: Request, read: Callable[..., T], *args) -> T:
    """Run ``read(session, *args)`` in one thread call that opens and closes its session.

    For ``async`` routes on the hot path that only read: one hop to a thread per request,
    where a sync route with :data:`SessionDep` takes three (the route, the response
    validation and the session's close), each of which wakes a thread and contends for the
    GIL. The session is a read session (autocommit on PostgreSQL: one round trip), and at
    most ``db_pool_size`` reads run at once, so the pool never opens overflow connections.
    """
    def run() -> T:
        with request.app.state.read_sessionmaker() as session:
            return read(session, *args)

    return await anyio.to_thread.run_sync(run, limiter=request.app.state.read_limiter)


async def get_principal(request: Request,
                        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The tenant behind the bearer key, as verified by :class:`api.middleware.EdgeGuard`.

    The guard answers 401 before the app runs; a request that reaches here unverified (an
    app without the guard) is refused all the same.
    """
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

LimitQuery = Annotated[int, Query(ge=1, le=200, description="items per page")]
CursorQuery = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
IdPath = Annotated[str, Path(max_length=64, description="an id returned by this API")]
