"""The tenant's API keys: list them (never their secrets) and revoke them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response

from api.deps import CurrentPrincipal, CursorQuery, LimitQuery, SessionDep
from api.errors import responses
from api.routers import PREFIX
from api.schemas import KeyOut, KeyPage
from store import repository

router = APIRouter(prefix=f"{PREFIX}/keys", tags=["keys"])

KeyIdPath = Annotated[str, Path(max_length=64, description="a key id, as listed by GET /keys")]


@router.get("", operation_id="list_keys", response_model=KeyPage, responses=responses(400, 401, 422))
def list_keys(principal: CurrentPrincipal, session: SessionDep, limit: LimitQuery = 50,
              cursor: CursorQuery = None) -> KeyPage:
    """The tenant's API keys, revoked ones included, newest first: ids and times, never secrets."""
    page = repository.list_api_keys(session, principal.tenant_id, limit=limit, cursor=cursor)
    items = [KeyOut(id=k.id, created_at=k.created_at, revoked_at=k.revoked_at, current=k.id == principal.key_id)
             for k in page.items]
    return KeyPage(items=items, next_cursor=page.next_cursor)


@router.delete("/{key_id}", status_code=204, operation_id="revoke_key", response_class=Response,
               responses=responses(401, 404, 422))
def revoke_key(key_id: KeyIdPath, principal: CurrentPrincipal, session: SessionDep, request: Request) -> Response:
    """Revoke one of the tenant's keys; every API process refuses it within a second.

    Revoking a revoked key changes nothing (204); another tenant's key is a 404. A tenant
    may revoke the key it calls with; it then needs another key.
    """
    key = repository.revoke_api_key(session, key_id, tenant_id=principal.tenant_id) \
        if repository.is_key_id(key_id) else None
    if key is None:
        raise HTTPException(404, f"key {key_id!r} not found")
    request.app.state.authenticator.forget(key_id)
    return Response(status_code=204)
