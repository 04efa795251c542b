"""Typed dependencies: the settings, a database session and the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.auth import Principal, authenticate
from api.settings import Settings

bearer = HTTPBearer(auto_error=False, description="an API key from `auditor keys create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request, closed after the response."""
    with request.app.state.sessionmaker() as session:
        yield session


async def get_principal(request: Request, session: Annotated[Session, Depends(get_session)],
                        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    """The tenant behind the bearer key; 401 without a valid one.

    Keys verified in the last ``auth_cache_seconds`` are answered from memory.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers=challenge)
    cache = request.app.state.key_cache
    principal = cache.get(credentials.credentials)
    if principal is None:
        principal = await run_in_threadpool(authenticate, session, credentials.credentials)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=challenge)
        cache.put(credentials.credentials, principal)
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

LimitQuery = Annotated[int, Query(ge=1, le=200, description="items per page")]
CursorQuery = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
IdPath = Annotated[str, Path(max_length=64, description="an id returned by this API")]
