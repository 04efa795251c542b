"""Repository functions: submission, the worker lifecycle, trial outcomes, pagination."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import update

from store import repository
from store.models import Audit


def _queue(session, dataset, count: int = 1) -> list[str]:
    return [repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id,
                                    config={"seed": i})[0].id for i in range(count)]


def test_create_audit_with_a_key_is_idempotent(session, dataset):
    first, created = repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id,
                                             config={"a": 1}, idempotency_key="k")
    again, created_again = repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id,
                                                   config={"a": 1}, idempotency_key="k")
    assert created and not created_again and again.id == first.id
    with pytest.raises(repository.Conflict):
        repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id, config={"a": 2},
                                idempotency_key="k")
    other = repository.get_or_create_tenant(session, f"o-{uuid.uuid4().hex[:6]}")
    with pytest.raises(repository.NotFound):
        repository.create_audit(session, tenant_id=other.id, dataset_id=dataset.id, config={})
    with pytest.raises(repository.NotFound):
        repository.create_scan(session, tenant_id=other.id, dataset_ids=[dataset.id], config={})
    assert repository.get_or_create_tenant(session, other.name).id == other.id


def test_write_functions_end_their_transaction_on_every_path(session, dataset):
    """No write transaction (on SQLite: the database's write lock) outlives a write function."""
    calls = [
        lambda: repository.get_or_create_tenant(session, "same-name"),
        lambda: repository.get_or_create_tenant(session, "same-name"),
        lambda: repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id, config={},
                                        idempotency_key="end"),
        lambda: repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id, config={},
                                        idempotency_key="end"),
        lambda: repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id="0" * 32, config={}),
        lambda: repository.create_scan(session, tenant_id=dataset.tenant_id, dataset_ids=["0" * 32], config={}),
        lambda: repository.claim_audit(session, "0" * 32, "w"),
        lambda: repository.heartbeat(session, "0" * 32, "w"),
        lambda: repository.set_progress(session, "0" * 32, 0.5),
        lambda: repository.finish_audit(session, "0" * 32, report={}, html=""),
        lambda: repository.fail_audit(session, "0" * 32, "x"),
        lambda: repository.mark_canceled(session, "0" * 32),
        lambda: repository.requeue_stale(session, timedelta(hours=1)),
    ]
    for call in calls:
        try:
            call()
        except repository.NotFound:
            pass
        assert not session.in_transaction()


def test_concurrent_submissions_with_one_key_race_to_one_row(sessions, dataset):
    barrier = threading.Barrier(10)

    def submit(_):
        with sessions() as session:
            barrier.wait()
            return repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id,
                                           config={}, idempotency_key="race")

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(submit, range(10)))
    assert len({audit.id for audit, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_claims_take_the_oldest_first_and_each_audit_once(sessions, session, dataset, empty_queue):
    ids = _queue(session, dataset, 12)
    assert repository.claim_next_audit(session, "w0").id == ids[0]

    def claim_all(worker):
        claimed = []
        with sessions() as own:
            while (audit := repository.claim_next_audit(own, worker)) is not None:
                claimed.append(audit.id)
        return claimed

    with ThreadPoolExecutor(4) as pool:
        claimed = [a for batch in pool.map(claim_all, ["w1", "w2", "w3", "w4"]) for a in batch]
    assert sorted(claimed) == sorted(ids[1:])
    assert repository.claim_next_audit(session, "w0") is None
    assert repository.claim_audit(session, ids[0], "w9") is None


def test_heartbeat_cancel_and_ownership(session, dataset):
    audit_id = _queue(session, dataset)[0]
    assert repository.claim_audit(session, audit_id, "w").status == "running"
    assert repository.heartbeat(session, audit_id, "w") == repository.HEARTBEAT_RUN
    assert repository.heartbeat(session, audit_id, "other") == repository.HEARTBEAT_LOST
    assert not repository.set_progress(session, audit_id, 0.5, worker_id="other")
    assert repository.set_progress(session, audit_id, 0.5, trials_done=3, stage="search", worker_id="w")
    with pytest.raises(ValueError):
        repository.set_progress(session, audit_id, 1.5)
    assert repository.request_cancel(session, dataset.tenant_id, audit_id).cancel_requested
    assert repository.heartbeat(session, audit_id, "w") == repository.HEARTBEAT_CANCEL
    assert repository.mark_canceled(session, audit_id, worker_id="w")
    assert repository.heartbeat(session, audit_id, "w") == repository.HEARTBEAT_LOST
    assert not repository.finish_audit(session, audit_id, report={}, html="", worker_id="w")
    assert repository.get_report(session, audit_id) is None


def test_finish_fail_and_cancel_transitions(session, dataset):
    done, failed, queued = _queue(session, dataset, 3)
    repository.claim_audit(session, done, "w")
    assert repository.finish_audit(session, done, report={"flagged": [1]}, html="<p/>", worker_id="w")
    assert repository.get_report(session, done).body == {"flagged": [1]}
    audit = repository.get_audit(session, dataset.tenant_id, done)
    assert (audit.status, audit.progress, audit.finished_at is not None) == ("succeeded", 1.0, True)
    assert not repository.fail_audit(session, done, "late")
    with pytest.raises(repository.Conflict):
        repository.request_cancel(session, dataset.tenant_id, done)
    assert repository.fail_audit(session, failed, "boom")
    assert repository.get_audit(session, dataset.tenant_id, failed).error == "boom"
    assert repository.request_cancel(session, dataset.tenant_id, queued).status == "canceled"
    assert repository.request_cancel(session, dataset.tenant_id, queued).status == "canceled"
    with pytest.raises(repository.NotFound):
        repository.request_cancel(session, "someone-else", queued)
    counts = repository.count_audits_by_status(session)
    assert set(counts) == {"queued", "running", "succeeded", "failed", "canceled"}
    assert counts["succeeded"] >= 1 and counts["failed"] >= 1


def test_release_and_final_trial_count(session, dataset):
    audit_id = _queue(session, dataset)[0]
    repository.claim_audit(session, audit_id, "w")
    assert not repository.release_audit(session, audit_id, "other")          # not its audit
    assert repository.release_audit(session, audit_id, "w")
    audit = repository.get_audit(session, dataset.tenant_id, audit_id)
    assert (audit.status, audit.worker_id) == ("queued", None)
    assert repository.claim_audit(session, audit_id, "w2").status == "running"
    repository.set_progress(session, audit_id, 0.5, trials_done=3, worker_id="w2")
    assert repository.finish_audit(session, audit_id, report={}, html="", worker_id="w2", trials_done=7)
    assert repository.get_audit(session, dataset.tenant_id, audit_id).trials_done == 7


def test_stale_running_audits_are_requeued_or_canceled(session, dataset):
    stale, stale_canceled, fresh = _queue(session, dataset, 3)
    for audit_id in (stale, stale_canceled, fresh):
        repository.claim_audit(session, audit_id, "w")
    repository.request_cancel(session, dataset.tenant_id, stale_canceled)
    old = datetime.now(UTC) - timedelta(minutes=10)
    session.execute(update(Audit).where(Audit.id.in_([stale, stale_canceled])).values(heartbeat_at=old))
    session.commit()
    requeued = repository.requeue_stale(session, timedelta(minutes=5))
    assert stale in requeued and fresh not in requeued and stale_canceled not in requeued
    statuses = {a: repository.get_audit(session, dataset.tenant_id, a).status for a in (stale, stale_canceled, fresh)}
    assert statuses == {stale: "queued", stale_canceled: "canceled", fresh: "running"}


def test_outcomes_are_stored_once_per_trial(session, dataset):
    audit_id = _queue(session, dataset)[0]
    rng = np.random.default_rng(0)
    masks = [rng.random(13) < 0.5 for _ in range(3)]
    batch = [(f"t{i}", m, 100 + i, {"loss": 0.1 * i, "rank": i}) for i, m in enumerate(masks)]
    assert repository.store_outcomes(session, audit_id, batch) == 3
    assert repository.store_outcomes(session, audit_id, batch[1:] + [("t3", [True] * 13, 7, {})]) == 1
    assert repository.store_outcome(session, audit_id, "t0", masks[0], 100, {}) is False
    assert repository.store_outcomes(session, audit_id, []) == 0
    stored = {o.trial_key: o for o in repository.list_outcomes(session, audit_id)}
    assert sorted(stored) == ["t0", "t1", "t2", "t3"]
    for i, mask in enumerate(masks):
        outcome = stored[f"t{i}"]
        assert outcome.mask.dtype == bool and np.array_equal(outcome.mask, mask)
        assert outcome.seed == 100 + i and outcome.metrics == {"loss": 0.1 * i, "rank": i}
    assert stored["t3"].mask.all() and stored["t3"].created_at.tzinfo is not None
    assert repository.list_outcomes(session, _queue(session, dataset)[0]) == []


def test_json_columns_take_numpy_values_and_store_non_finite_numbers_as_null(session, dataset):
    audit_id = _queue(session, dataset)[0]
    metrics = {"loss": float("nan"), "n": np.int64(3), "curve": np.array([1.5, np.inf]), "ok": np.bool_(True)}
    repository.store_outcome(session, audit_id, "diverged", [True], 1, metrics)
    session.expunge_all()
    stored = repository.list_outcomes(session, audit_id)[0].metrics
    assert stored == {"loss": None, "n": 3, "curve": [1.5, None], "ok": True}


def test_pagination_and_cursors(session, dataset):
    ids = _queue(session, dataset, 5)
    page = repository.list_audits(session, dataset.tenant_id, dataset_id=dataset.id, limit=3)
    assert [a.id for a in page.items] == ids[:1:-1] and page.next_cursor
    rest = repository.list_audits(session, dataset.tenant_id, dataset_id=dataset.id, limit=3, cursor=page.next_cursor)
    assert [a.id for a in rest.items] == ids[1::-1] and rest.next_cursor is None
    stamp, last = repository.decode_cursor(page.next_cursor)
    assert last == ids[2] and stamp.tzinfo is not None
    for bad in ("", "!!", "bm90LWpzb24", repository.encode_cursor(stamp, "x\x00y"),
                repository.encode_cursor(stamp.replace(tzinfo=None), ids[0])):
        with pytest.raises(repository.InvalidCursor):
            repository.decode_cursor(bad)


def test_outcomes_without_extras_and_as_stored_before_extras_resume(session, dataset):
    """A model without diagnostics (a user's TorchModel) stores no extras; an outcome stored
    before extras existed (the SSM's effective rank beside the generic fields, NaN as null)
    resumes with it as an extra."""
    import math

    from auditor.trials import Outcome

    audit_id = _queue(session, dataset)[0]
    bare = Outcome(key="t0", error=0.5, train_loss=0.01, converged=True, steps=40)
    legacy = {"key": "t1", "error": 0.25, "train_loss": 0.02, "converged": False, "steps": 50,
              "effective_rank": None}
    repository.store_outcomes(session, audit_id, [("t0", [True] * 13, 3, bare.to_dict()),
                                                  ("t1", [True] * 13, 4, legacy)])
    back = {o.trial_key: Outcome.from_dict(o.metrics) for o in repository.list_outcomes(session, audit_id)}
    assert back["t0"] == bare
    assert back["t1"].error == 0.25 and not back["t1"].converged and math.isnan(back["t1"].extra("effective_rank"))


# --- fair claims and quotas ----------------------------------------------------------------------

FAIR_SUMMARY = {"sha256": "cd" * 32, "n": 13, "length": 6, "channels": 1, "task": "regression", "n_val": None,
                "length_val": None, "has_ground_truth": False}


def _tenant_with_audits(session, count: int):
    tenant = repository.get_or_create_tenant(session, f"f-{uuid.uuid4().hex[:8]}")
    dataset = repository.add_dataset(session, tenant_id=tenant.id, filename="d.npz", size_bytes=10,
                                     uri="file:///nowhere/d.npz", summary=FAIR_SUMMARY)
    return tenant.id, _queue(session, dataset, count)


def test_claims_go_to_the_tenant_with_the_fewest_running_audits(session, empty_queue):
    (a, a_ids), (b, b_ids), (c, c_ids) = (_tenant_with_audits(session, k) for k in (3, 2, 1))

    def claim(limit):
        audit = repository.claim_next_audit(session, "w", max_running_per_tenant=limit)
        return None if audit is None else audit.id

    assert [claim(2) for _ in range(6)] == [a_ids[0], b_ids[0], c_ids[0], a_ids[1], b_ids[1], None]
    assert repository.finish_audit(session, a_ids[0], report={}, html="")
    assert claim(2) == a_ids[2]


def test_a_tenant_at_its_running_limit_is_skipped(session, empty_queue):
    (a, a_ids), (b, b_ids) = _tenant_with_audits(session, 3), _tenant_with_audits(session, 2)
    claimed = [repository.claim_next_audit(session, "w", max_running_per_tenant=1) for _ in range(3)]
    assert [x.id if x else None for x in claimed] == [a_ids[0], b_ids[0], None]
    assert repository.fail_audit(session, b_ids[0], "done")
    assert repository.claim_next_audit(session, "w", max_running_per_tenant=1).id == b_ids[1]
    assert repository.claim_next_audit(session, "w").id == a_ids[1]          # no limit: oldest first


def test_concurrent_claimers_respect_the_per_tenant_limit(sessions, session, empty_queue):
    tenants = [_tenant_with_audits(session, 4) for _ in range(3)]
    barrier = threading.Barrier(6)

    def claim_all(worker):
        claimed = []
        with sessions() as own:
            barrier.wait()
            while (audit := repository.claim_next_audit(own, worker, max_running_per_tenant=1)) is not None:
                claimed.append(audit.id)
        return claimed

    with ThreadPoolExecutor(6) as pool:
        claimed = [a for batch in pool.map(claim_all, [f"w{i}" for i in range(6)]) for a in batch]
    assert sorted(claimed) == sorted(ids[0] for _, ids in tenants)


def _cost(config, n, task):
    return config.get("cost", 1)


def test_quota_of_queued_audits_and_of_their_cost(session, dataset):
    quota = repository.Quota(max_queued=2, max_cost=10, cost=_cost, retry_after=7)
    create = lambda **config: repository.create_audit(session, tenant_id=dataset.tenant_id,  # noqa: E731
                                                      dataset_id=dataset.id, config=config, quota=quota)[0]
    first = create(cost=4, seed=1)
    create(cost=4, seed=2)
    with pytest.raises(repository.QuotaExceeded, match="queued") as info:
        create(cost=1, seed=3)
    assert info.value.retry_after == 7 and not session.in_transaction()
    repository.claim_audit(session, first.id, "w")                        # running audits still cost
    with pytest.raises(repository.QuotaExceeded, match="cost"):
        create(cost=3, seed=4)
    fifth = create(cost=2, seed=5)                                       # 4 + 4 + 2 = 10
    with pytest.raises(repository.QuotaExceeded):
        repository.create_scan(session, tenant_id=dataset.tenant_id, dataset_ids=[dataset.id],
                               config={"cost": 0}, quota=quota)              # a third queued audit
    repository.fail_audit(session, first.id, "done")                     # finished audits count no more
    repository.request_cancel(session, dataset.tenant_id, fifth.id)
    scan, audits = repository.create_scan(session, tenant_id=dataset.tenant_id, dataset_ids=[dataset.id],
                                          config={"cost": 4}, quota=quota)
    assert len(audits) == 1
    replay = repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id,
                                     config={"cost": 9}, idempotency_key="q")
    assert repository.create_audit(session, tenant_id=dataset.tenant_id, dataset_id=dataset.id, config={"cost": 9},
                                   idempotency_key="q", quota=quota)[0].id == replay[0].id   # replays pass
