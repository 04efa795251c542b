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


def _scan(api, *datasets: str, config: dict | None = None) -> dict:
    response = api.post("/scans", json={"dataset_ids": list(datasets), **({"config": config} if config else {})})
    assert response.status_code == 202, response.text
    return response.json()


def test_scans_are_listed_newest_first_by_tenant_and_paginated(api, other_api, dataset_id):
    scans = [_scan(api, dataset_id)["id"] for _ in range(3)]
    other = upload(other_api, valid_npz(seed=5)).json()["id"]
    foreign = _scan(other_api, other)["id"]
    first = api.get("/scans", params={"limit": 2}).json()
    assert [s["id"] for s in first["items"]] == scans[::-1][:2] and first["next_cursor"]
    assert first["items"][0]["audits"][0]["dataset_id"] == dataset_id
    second = api.get("/scans", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [s["id"] for s in second["items"]] == [scans[0]] and second["next_cursor"] is None
    assert foreign not in {s["id"] for s in api.get("/scans").json()["items"]}
    assert api.get("/scans", params={"cursor": "not-a-cursor"}).status_code == 400


def test_scan_report_summarizes_each_audit_as_json_and_escaped_html(backend, api, other_api):
    names = ["clean.npz", "<script>poisoned.npz", "broken.npz"]
    datasets = [upload(api, valid_npz(seed=30 + i), filename=name).json()["id"] for i, name in enumerate(names)]
    scan = _scan(api, *datasets)
    audits = [a["id"] for a in scan["audits"]]
    with backend.sessions() as session:
        for audit, flagged, line in ((audits[0], [], "no poisons found"), (audits[1], [3, 4], "2 <flagged>")):
            repository.claim_audit(session, audit, "w")
            repository.finish_audit(session, audit, report={"flagged": flagged, "status_line": line}, html="<p/>")
    report = api.get(f"/scans/{scan['id']}/report").json()
    assert report["status"] == "running"
    assert [(r["filename"], r["status"], r["flagged"], r["status_line"]) for r in report["audits"]] == [
        ("clean.npz", "succeeded", 0, "no poisons found"), ("<script>poisoned.npz", "succeeded", 2, "2 <flagged>"),
        ("broken.npz", "queued", None, None)]
    with backend.sessions() as session:
        repository.claim_audit(session, audits[2], "w")
        repository.fail_audit(session, audits[2], "boom")
    report = api.get(f"/scans/{scan['id']}/report").json()
    assert report["status"] == "finished" and report["audits"][2]["error"] == "boom"
    assert report["totals"] == {"audits": 3, "queued": 0, "running": 0, "succeeded": 2, "failed": 1, "canceled": 0,
                                "flagged_audits": 1, "flagged": 2}

    html = api.get(f"/scans/{scan['id']}/report", params={"format": "html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;poisoned.npz" in html.text and "<script>" not in html.text
    assert "2 &lt;flagged&gt;" in html.text and "boom" in html.text
    assert api.get(f"/scans/{scan['id']}/report", headers={"Accept": "text/html"}).text == html.text
    assert other_api.get(f"/scans/{scan['id']}/report").status_code == 404
    assert api.get("/scans/" + "0" * 32 + "/report").status_code == 404
