"""Audits: submission, idempotency, status, reports, cancel, listing."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from api.client import Client
from apitools import npz_bytes, submit, upload, valid_arrays, valid_npz
from auditor.config import AuditConfig
from auditor.data import load_dataset
from store import repository

REPORT = {"flagged": [3, 7], "scores": [0.0] * 12, "trials": 40, "generalization": {"with_all": 0.4}}
HTML = "<!doctype html><title>report</title><p>2 flagged</p>"


def _finish(backend, audit_id: str, *, report=REPORT) -> None:
    with backend.sessions() as session:
        assert repository.claim_audit(session, audit_id, "test-worker") is not None
        assert repository.finish_audit(session, audit_id, report=report, html=HTML, worker_id="test-worker")


def test_submit_queues_with_the_default_config(api, dataset_id):
    response = submit(api, dataset_id)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0 and body["dataset_id"] == dataset_id
    assert body["config"] == AuditConfig().model_dump(mode="json")
    assert response.headers["location"] == f"/api/v1/audits/{body['id']}"
    assert "idempotent-replayed" not in response.headers
    assert api.get(f"/audits/{body['id']}").json() == body


@pytest.mark.parametrize("config,field", [({"strategy": "magic"}, "strategy"), ({"budget": 0}, "budget"),
                                          ({"typo": 1}, "typo"), ({"device": "tpu"}, "device"),
                                          ("fast", "config"), ({"confirm_seeds": 1.5}, "confirm_seeds")])
def test_invalid_config_is_422_naming_the_field(backend, key, api, dataset_id, config, field):
    response = submit(api, dataset_id, config)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]
    assert response.json()["errors"][0]["loc"][:2] == ["body", "config"]
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


def test_malformed_bodies_are_422(api, dataset_id):
    assert api.post("/audits", json={}).status_code == 422
    assert api.post("/audits", json={"dataset_id": dataset_id, "extra": 1}).status_code == 422
    assert api.post("/audits", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert api.post("/audits", json=[dataset_id]).status_code == 422
    assert submit(api, dataset_id, key="k" * 256).status_code == 422


def test_unknown_dataset_is_404_and_stores_nothing(backend, key, api):
    for dataset in ("0" * 32, "not-an-id"):
        response = submit(api, dataset)
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]
    assert backend.tenant_counts(backend.tenant_of(key)) == (0, 0)


def test_twenty_concurrent_submissions_with_one_key_make_one_audit(backend, key, dataset_id):
    barrier = threading.Barrier(20)

    def fire(_):
        with backend.client(key) as client:
            barrier.wait()
            return submit(client, dataset_id, {"budget": 64}, key="same-key")

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(fire, range(20)))
    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 1


def test_idempotency_key_reuse_with_another_body_is_409(api, other_api, dataset_id):
    first = submit(api, dataset_id, key="k1")
    assert submit(api, dataset_id, key="k1").json()["id"] == first.json()["id"]
    response = submit(api, dataset_id, {"budget": 5}, key="k1")
    assert response.status_code == 409
    assert "Idempotency-Key" in response.json()["detail"]
    other_dataset = upload(other_api, valid_npz()).json()["id"]
    assert submit(other_api, other_dataset, key="k1").status_code == 202  # keys are per tenant


def test_progress_is_visible(backend, api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    with backend.sessions() as session:
        repository.claim_audit(session, audit, "w")
        assert repository.set_progress(session, audit, 0.25, trials_done=10, stage="search", worker_id="w")
    body = api.get(f"/audits/{audit}").json()
    assert (body["status"], body["progress"], body["trials_done"], body["stage"]) == ("running", 0.25, 10, "search")
    assert body["started_at"] is not None and body["finished_at"] is None


def test_report_is_409_until_the_audit_succeeds(backend, api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    response = api.get(f"/audits/{audit}/report")
    assert response.status_code == 409
    assert "queued" in response.json()["detail"]
    _finish(backend, audit)
    response = api.get(f"/audits/{audit}/report")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == REPORT
    assert api.get(f"/audits/{audit}").json()["status"] == "succeeded"


def test_html_report_by_accept_or_format(backend, api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    _finish(backend, audit)
    path = f"/audits/{audit}/report"
    for kwargs in ({"headers": {"Accept": "text/html"}}, {"params": {"format": "html"}},
                   {"headers": {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}},
                   {"params": {"format": "html"}, "headers": {"Accept": "application/json"}}):
        response = api.get(path, **kwargs)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html"), kwargs
        assert response.text == HTML
    for kwargs in ({"headers": {"Accept": "application/json, text/html;q=0.5"}}, {"headers": {"Accept": "*/*"}},
                   {"params": {"format": "json"}, "headers": {"Accept": "text/html"}}):
        assert api.get(path, **kwargs).json() == REPORT, kwargs
    assert api.get(path, params={"format": "pdf"}).status_code == 422


def test_failed_audit_report_is_409_with_the_error(backend, api, dataset_id):
    audit = submit(api, dataset_id).json()["id"]
    with backend.sessions() as session:
        assert repository.fail_audit(session, audit, "dataset file is missing")
    response = api.get(f"/audits/{audit}/report")
    assert response.status_code == 409 and "dataset file is missing" in response.json()["detail"]
    assert api.get(f"/audits/{audit}").json()["error"] == "dataset file is missing"
    assert api.post(f"/audits/{audit}/cancel").status_code == 409


def test_cancel_queued_running_and_finished(backend, api, dataset_id):
    queued = submit(api, dataset_id).json()["id"]
    response = api.post(f"/audits/{queued}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    assert api.post(f"/audits/{queued}/cancel").json()["status"] == "canceled"
    assert "canceled" in api.get(f"/audits/{queued}/report").json()["detail"]

    running = submit(api, dataset_id, {"seed": 1}).json()["id"]
    with backend.sessions() as session:
        repository.claim_audit(session, running, "w")
    body = api.post(f"/audits/{running}/cancel").json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    with backend.sessions() as session:
        assert repository.heartbeat(session, running, "w") == repository.HEARTBEAT_CANCEL
        assert repository.mark_canceled(session, running, worker_id="w")
    assert api.get(f"/audits/{running}").json()["status"] == "canceled"

    done = submit(api, dataset_id, {"seed": 2}).json()["id"]
    _finish(backend, done)
    response = api.post(f"/audits/{done}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]
    assert api.post("/audits/" + "0" * 32 + "/cancel").status_code == 404


def test_list_filters_and_cursor_pagination(backend, api, dataset_id):
    second = upload(api, valid_npz(seed=42)).json()["id"]
    ids = [submit(api, d, {"seed": i}).json()["id"] for i, d in enumerate([dataset_id, second] * 3)]
    api.post(f"/audits/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = api.get("/audits", params={"limit": 4} | ({"cursor": cursor} if cursor else {})).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    by_dataset = api.get("/audits", params={"dataset_id": second}).json()["items"]
    assert [a["id"] for a in by_dataset] == ids[1::2][::-1]
    assert [a["id"] for a in api.get("/audits", params={"status": "canceled"}).json()["items"]] == [ids[0]]
    assert len(api.get("/audits", params={"status": "queued", "dataset_id": dataset_id}).json()["items"]) == 2
    assert api.get("/audits", params={"dataset_id": "junk"}).json()["items"] == []
    assert api.get("/audits", params={"status": "done"}).status_code == 422
    response = api.get("/audits", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


def test_cleaned_dataset_download(backend, key, api, other_api, tmp_path):
    arrays = valid_arrays(n=12)
    arrays["is_poison"] = np.arange(12) % 5 == 0
    dataset = upload(api, npz_bytes(**arrays), filename="my data.npz").json()["id"]
    audit = submit(api, dataset).json()["id"]
    path = f"/audits/{audit}/cleaned"
    response = api.get(path)
    assert response.status_code == 409 and "queued" in response.json()["detail"]
    _finish(backend, audit)                                      # flags examples 3 and 7
    response = api.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == 'attachment; filename="my_data-cleaned.npz"'
    cleaned = load_dataset(io.BytesIO(response.content))
    kept = [i for i in range(12) if i not in REPORT["flagged"]]
    assert cleaned.n == 12 - len(REPORT["flagged"])
    np.testing.assert_array_equal(cleaned.x, arrays["x"][kept])
    np.testing.assert_array_equal(cleaned.y, arrays["y"][kept])
    np.testing.assert_array_equal(cleaned.is_poison, arrays["is_poison"][kept])
    np.testing.assert_array_equal(cleaned.x_val, arrays["x_val"])
    np.testing.assert_array_equal(cleaned.y_val, arrays["y_val"])
    assert other_api.get(path).status_code == 404                # another tenant's audit
    assert api.get("/audits/" + "0" * 32 + "/cleaned").status_code == 404

    with Client(backend.base_url, key) as client:
        written = client.cleaned(audit, tmp_path / "cleaned.npz")
    assert written["bytes"] == len(response.content) and (tmp_path / "cleaned.npz").read_bytes() == response.content
    assert written["sha256"] == load_dataset(tmp_path / "cleaned.npz").sha256


def test_cleaned_is_409_for_failed_audits_and_bad_reports(backend, api, dataset_id):
    failed = submit(api, dataset_id).json()["id"]
    with backend.sessions() as session:
        assert repository.fail_audit(session, failed, "out of memory")
    response = api.get(f"/audits/{failed}/cleaned")
    assert response.status_code == 409 and "out of memory" in response.json()["detail"]
    wrong = submit(api, dataset_id, {"seed": 5}).json()["id"]
    _finish(backend, wrong, report={**REPORT, "flagged": [3, 99]})    # an index the dataset does not have
    response = api.get(f"/audits/{wrong}/cleaned")
    assert response.status_code == 409 and "out of range" in response.json()["detail"]


# --- what the service runs: devices, cost, quotas ---------------------------------------------------

@pytest.mark.parametrize("model", ["os:system", "tests.auditor.torch_models_fixture:mlp"])
def test_a_model_named_by_import_path_is_422_for_audits_and_scans(backend, key, api, dataset_id, model):
    """The service never imports code a request names: registered models only."""
    response = submit(api, dataset_id, {"model": model})
    assert response.status_code == 422, response.text
    assert "registered" in response.json()["detail"] and response.json()["errors"][0]["loc"] == ["body", "config",
                                                                                                "model"]
    scan = api.post("/scans", json={"dataset_ids": [dataset_id], "config": {"model": model}})
    assert scan.status_code == 422, scan.text
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


@pytest.mark.parametrize("device", ["cuda:99", "cuda"])
def test_a_device_the_service_does_not_offer_is_422(backend, key, api, dataset_id, device):
    response = submit(api, dataset_id, {"device": device})
    assert response.status_code == 422, response.text
    assert "not offered" in response.json()["detail"] and "cpu" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "config", "device"]
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


def test_a_forensics_audit_of_a_set_without_its_target_is_422(backend, key, api, dataset_id):
    response = submit(api, dataset_id, {"mode": "forensics"})
    assert response.status_code == 422, response.text
    assert "x_target" in response.json()["detail"] and "blind" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "config", "mode"]
    scan = api.post("/scans", json={"dataset_ids": [dataset_id], "config": {"mode": "forensics"}})
    assert scan.status_code == 422, scan.text
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


def test_the_network_student_on_several_channels_is_422_at_submit(backend, key, api):
    rng = np.random.default_rng(0)
    wide = upload(api, npz_bytes(x=rng.normal(size=(12, 6, 3)), y=rng.normal(size=12),
                                 x_val=rng.normal(size=(4, 12, 3)), y_val=rng.normal(size=4)))
    assert wide.status_code == 201, wide.text
    response = submit(api, wide.json()["id"], {"model": "network"})
    assert response.status_code == 422, response.text
    assert "3 channel(s)" in response.json()["detail"] and "ssm" in response.json()["detail"]
    assert response.json()["errors"][0]["loc"] == ["body", "config", "model"]
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


def test_an_audit_over_the_cost_limit_is_422(backend, key, api, dataset_id):
    response = submit(api, dataset_id, {"budget": 1_000_000, "max_steps": 1_000_000})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "1000048 trials" in detail and "over the limit" in detail
    scan = api.post("/scans", json={"dataset_ids": [dataset_id], "config": {"budget": 1_000_000,
                                                                           "max_steps": 1_000_000}})
    assert scan.status_code == 422
    assert backend.tenant_counts(backend.tenant_of(key))[1] == 0


@pytest.fixture(scope="module")
def strict(backend):
    """A second server on the same database with small quotas and a GPU on offer."""
    from api.main import create_app
    from api.settings import Settings
    from apitools import MAX_EXPANDED, MAX_UPLOAD

    settings = Settings(database_url=backend.database_url, data_dir=backend.data_dir, max_upload_bytes=MAX_UPLOAD,
                        max_dataset_bytes=MAX_EXPANDED, max_queued_audits_per_tenant=3,
                        max_tenant_trial_steps=2 * COST_OF_DEFAULT, allowed_devices="cpu, cuda:0")
    app = create_app(settings)
    live_server = type(backend).new_key.__globals__["LiveServer"]      # from this directory's conftest
    with live_server(app) as server:
        yield type(backend)(backend.name, backend.database_url, server.base_url, backend.data_dir,
                            app.state.sessionmaker)


COST_OF_DEFAULT = (160 + 2 * 3 * 8) * 50_000  # the default config on valid_npz: search, gate, confirmation


def test_quota_of_queued_audits_is_429_with_retry_after(strict):
    key = strict.new_key()
    with strict.client(key) as api, strict.client(strict.new_key()) as other:
        dataset = upload(api, valid_npz(seed=21)).json()["id"]
        cheap = [submit(api, dataset, {"seed": i, "max_steps": 10}, key=f"k{i}") for i in range(3)]
        assert [r.status_code for r in cheap] == [202] * 3
        response = submit(api, dataset, {"seed": 3, "max_steps": 10})
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) > 0 and "queued" in response.json()["detail"]
        replay = submit(api, dataset, {"seed": 0, "max_steps": 10}, key="k0")          # replays still answer
        assert replay.status_code == 202 and replay.json()["id"] == cheap[0].json()["id"]
        scan = api.post("/scans", json={"dataset_ids": [dataset], "config": {"max_steps": 10}})
        assert scan.status_code == 429 and "retry-after" in scan.headers
        assert strict.tenant_counts(strict.tenant_of(key))[1] == 3
        other_dataset = upload(other, valid_npz(seed=22)).json()["id"]
        assert submit(other, other_dataset, {"max_steps": 10}).status_code == 202       # quotas are per tenant
        api.post(f"/audits/{cheap[1].json()['id']}/cancel")
        assert submit(api, dataset, {"seed": 3, "max_steps": 10}).status_code == 202


def test_quota_of_cost_is_429_and_an_audit_that_never_fits_is_422(strict):
    key = strict.new_key()
    with strict.client(key) as api:
        dataset = upload(api, valid_npz(seed=23)).json()["id"]
        assert [submit(api, dataset, {"seed": i}).status_code for i in range(2)] == [202, 202]
        response = submit(api, dataset, {"seed": 2})
        assert response.status_code == 429 and "cost" in response.json()["detail"], response.text
        assert "retry-after" in response.headers
        response = submit(api, dataset, {"max_steps": 150_000})               # over the tenant's whole quota
        assert response.status_code == 422 and "over the limit" in response.json()["detail"]
        assert strict.tenant_counts(strict.tenant_of(key))[1] == 2


def test_devices_on_offer_are_accepted(strict):
    with strict.client(strict.new_key()) as api:
        dataset = upload(api, valid_npz(seed=24)).json()["id"]
        response = submit(api, dataset, {"device": "cuda:0", "max_steps": 10})
        assert response.status_code == 202, response.text
        assert submit(api, dataset, {"device": "cuda:1", "max_steps": 10}).status_code == 422
