"""Health, metrics and the OpenAPI document."""

from __future__ import annotations

import httpx

from apitools import OPERATIONS, submit


def test_health_needs_no_key(backend):
    response = httpx.get(f"{backend.base_url}/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["database"] == "ok"


def test_openapi_has_stable_operation_ids(backend):
    spec = httpx.get(f"{backend.base_url}/api/v1/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ids == set(OPERATIONS)
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_metrics_count_requests_by_route_and_audits_by_status(backend, api, dataset_id):
    assert submit(api, dataset_id).status_code == 202
    api.get("/audits/" + "0" * 32)
    text = httpx.get(f"{backend.base_url}/api/v1/metrics").text
    assert 'auditor_http_requests_total{method="POST",route="/api/v1/audits",status="202"}' in text
    assert 'route="/api/v1/audits/{audit_id}",status="404"' in text
    assert "auditor_http_request_duration_seconds_bucket" in text
    queued = [line for line in text.splitlines() if line.startswith('auditor_audits{status="queued"}')]
    assert queued and float(queued[0].split()[-1]) >= 1
