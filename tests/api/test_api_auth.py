"""Bearer keys: 401 without a valid key; another tenant's objects are 404, never 403."""

from __future__ import annotations

import pytest

from apitools import submit, upload, valid_npz

MISSING = "0" * 32
PROTECTED = [("POST", "/datasets"), ("GET", "/datasets"), ("GET", f"/datasets/{MISSING}"), ("POST", "/audits"),
             ("GET", "/audits"), ("GET", f"/audits/{MISSING}"), ("GET", f"/audits/{MISSING}/report"),
             ("POST", f"/audits/{MISSING}/cancel"), ("POST", "/scans"), ("GET", f"/scans/{MISSING}")]


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer aud_0123456789abcdef_wrong", "Bearer not-a-key", "Basic dXNlcjpw"])
def test_no_key_or_wrong_key_is_401(backend, method, path, header):
    headers = {"Authorization": header} if header else {}
    with backend.client(None) as client:
        response = client.request(method, path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


def test_wrong_secret_of_a_real_key_is_401(backend, key):
    with backend.client(key[:-2] + ("AA" if not key.endswith("AA") else "BB")) as client:
        assert client.get("/datasets").status_code == 401


def test_other_tenants_objects_are_404(backend, api, other_api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    scan = api.post("/scans", json={"dataset_ids": [dataset_id]}).json()["id"]
    for path in (f"/datasets/{dataset_id}", f"/audits/{audit}", f"/audits/{audit}/report", f"/scans/{scan}"):
        response = other_api.get(path)
        assert response.status_code == 404, (path, response.text)
        assert "not found" in response.json()["detail"]
    assert other_api.post(f"/audits/{audit}/cancel").status_code == 404
    assert submit(other_api, dataset_id).status_code == 404
    assert other_api.post("/scans", json={"dataset_ids": [dataset_id]}).status_code == 404
    assert api.get(f"/audits/{audit}").json()["status"] == "queued"


def test_listings_show_only_own_objects(api, other_api, dataset_id):
    submit(api, dataset_id)
    assert upload(other_api, valid_npz(seed=99)).status_code == 201
    assert [d["id"] for d in api.get("/datasets").json()["items"]] == [dataset_id]
    assert other_api.get("/audits").json()["items"] == []
    assert other_api.get("/audits", params={"dataset_id": dataset_id}).json()["items"] == []
