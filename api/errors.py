"""Error bodies: every error is JSON ``{"detail": "..."}`` that says what is wrong.

Unhandled exceptions become ``500 {"detail": "internal error", "error_id": "..."}`` in
:class:`api.middleware.ErrorBoundary`; the traceback is logged under the same id.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.schemas import ErrorOut
from auditor.data import DatasetError
from store.repository import Conflict, InvalidCursor, NotFound, QuotaExceeded

DESCRIPTIONS = {
    400: "Malformed request: a cursor this API did not issue, or an unreadable multipart body",
    401: "Missing or invalid API key",
    404: "No such object for this tenant",
    409: "Conflicts with the object's state or an earlier request with the same Idempotency-Key",
    413: "Request body or upload over the size limit",
    422: "Invalid request: the detail names each invalid field",
    429: ("Over a rate limit, or over the tenant's quota of queued audits or of their cost; retry after the "
          "seconds in the Retry-After header"),
    503: "The database is unavailable; retry after the seconds in the Retry-After header",
}


class InternalErrorOut(BaseModel):
    """An unexpected server error; quote ``error_id`` when reporting it (the server logged it)."""

    detail: str = Field(description="always 'internal error'")
    error_id: str = Field(description="identifies the logged traceback")


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the given error status codes."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def _location(loc) -> str:
    return ".".join(str(part) for part in loc)


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    items = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
              "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", "invalid"))} for e in exc.errors()]
    detail = "; ".join(f"{_location(i['loc'])}: {i['msg']}" for i in items) or "invalid request"
    return _error(422, detail, errors=items)


async def _dataset(_request: Request, exc: DatasetError) -> JSONResponse:
    return _error(422, f"invalid dataset: {exc}")


async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
    return _error(404, str(exc))


async def _conflict(_request: Request, exc: Conflict) -> JSONResponse:
    return _error(409, str(exc))


async def _cursor(_request: Request, exc: InvalidCursor) -> JSONResponse:
    return _error(400, str(exc))


def edge_responses(*, keyed: bool) -> dict[int | str, dict]:
    """OpenAPI ``responses`` of the edge middleware for a router: 500 everywhere, and 401 and
    429 where a key is needed."""
    internal = {500: {"model": InternalErrorOut, "description": "Unexpected server error"}}
    return {**responses(401, 429, 503), **internal} if keyed else internal


async def _quota(_request: Request, exc: QuotaExceeded) -> JSONResponse:
    response = _error(429, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install_handlers(app: FastAPI) -> None:
    """Map validation and domain errors to 4xx JSON responses."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(DatasetError, _dataset)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(InvalidCursor, _cursor)
    app.add_exception_handler(QuotaExceeded, _quota)
