"""Scans: many datasets, one config, one summary."""

from __future__ import annotations

from apitools import upload, valid_npz
from store import repository


def test_scan_queues_one_audit_per_dataset_and_summarizes(backend, api, dataset_id):
    others = [upload(api, valid_npz(seed=s)).json()["id"] for s in (11, 12)]
    response = api.post("/scans", json={"dataset_ids": [dataset_id, *others, dataset_id], "config": {"budget": 32}})
    assert response.status_code == 202, response.text
    scan = response.json()
    assert response.headers["location"] == f"/api/v1/scans/{scan['id']}"
    assert scan["status"] == "queued" and scan["counts"]["queued"] == 3 and scan["flagged_total"] == 0
    assert [a["dataset_id"] for a in scan["audits"]] == [dataset_id, *others]
    assert scan["config"]["budget"] == 32
    audits = [a["id"] for a in scan["audits"]]
    listed = api.get("/audits", params={"scan_id": scan["id"]}).json()["items"]
    assert sorted(a["id"] for a in listed) == sorted(audits)
    assert all(a["config"]["budget"] == 32 and a["scan_id"] == scan["id"] for a in listed)

    with backend.sessions() as session:
        repository.claim_audit(session, audits[0], "w")
        repository.finish_audit(session, audits[0], report={"flagged": [1, 2, 5]}, html="<p>x</p>")
        repository.claim_audit(session, audits[1], "w")
        repository.set_progress(session, audits[1], 0.5)
    summary = api.get(f"/scans/{scan['id']}").json()
    assert summary["status"] == "running"
    assert summary["counts"] == {"queued": 1, "running": 1, "succeeded": 1, "failed": 0, "canceled": 0}
    assert summary["flagged_total"] == 3
    assert [a["flagged"] for a in summary["audits"]] == [3, None, None]
    assert summary["progress"] == 0.5

    api.post(f"/audits/{audits[2]}/cancel")
    with backend.sessions() as session:
        repository.fail_audit(session, audits[1], "boom")
    summary = api.get(f"/scans/{scan['id']}").json()
    assert summary["status"] == "finished" and summary["progress"] == 1.0


def test_scan_with_an_unknown_dataset_stores_nothing(backend, key, api, dataset_id):
    missing = "f" * 32
    response = api.post("/scans", json={"dataset_ids": [dataset_id, missing]})
    assert response.status_code == 404 and missing in response.json()["detail"]
    assert api.post("/scans", json={"dataset_ids": [dataset_id, "bad id"]}).status_code == 404
    assert backend.tenant_counts(backend.tenant_of(key)) == (1, 0)


def test_bad_scan_requests_are_4xx(api, dataset_id):
    assert api.post("/scans", json={"dataset_ids": []}).status_code == 422
    assert api.post("/scans", json={"dataset_ids": [dataset_id], "config": {"strategy": "?"}}).status_code == 422
    assert api.post("/scans", json={"datasets": [dataset_id]}).status_code == 422
    assert api.get("/scans/" + "0" * 32).status_code == 404
