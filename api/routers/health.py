"""Liveness with a database round trip, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import text

from api.deps import SessionDep
from api.routers import PREFIX
from api.schemas import ErrorOut, Health

router = APIRouter(prefix=PREFIX, tags=["operations"])


@router.get("/health", operation_id="get_health", response_model=Health,
            responses={503: {"model": ErrorOut, "description": "The database is unreachable"}})
def get_health(request: Request, session: SessionDep) -> Health:
    """Whether the service and its database answer. Needs no API key."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means the database is not usable
        raise HTTPException(503, f"database unavailable: {type(exc).__name__}") from None
    return Health(status="ok", database="ok", version=request.app.version)


@router.get("/metrics", operation_id="get_metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus exposition format"}})
def get_metrics(request: Request) -> Response:
    """Request counts and latencies by route, and audits by status. Needs no API key."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
