"""The dispatcher on a real Ray cluster and a real database (SQLite and PostgreSQL): runs
queued audits to a stored report, several at once, honours cancel, and a dispatcher killed
mid-audit is replaced by one that finishes it without retraining any stored trial."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from auditor.benchmarks import BenchmarkSpec
from auditor.config import AuditConfig, planned_trials
from auditor.data import validate_arrays
from auditor.executors import InlineExecutor
from store import repository
from store.models import Audit, TrialOutcome
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.executor import RayExecutor
from workers.pool import RetrainerPool

pytestmark = pytest.mark.timeout(600)


def _wait(predicate, *, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def _audit(sessions, audit_id: str) -> Audit:
    with sessions() as session:
        return session.get(Audit, audit_id)


def _stored_keys(sessions, audit_id: str) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(TrialOutcome.trial_key).where(TrialOutcome.audit_id == audit_id)))


class Running:
    """A dispatcher on its own pool, polling in a thread."""

    def __init__(self, sessions, **config):
        self.pool = RetrainerPool(actors=2)
        self.dispatcher = Dispatcher(sessions, lambda problem, stop: RayExecutor(problem, self.pool, stop=stop),
                                     DispatcherConfig(poll_seconds=0.2, heartbeat_seconds=0.5, **config))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.dispatcher.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Dispatcher:
        self.thread.start()
        return self.dispatcher

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)
        self.pool.shutdown()


def test_runs_two_audits_at_once_to_stored_reports(cluster, sessions, queue_audit, empty_queue):
    first = queue_audit()
    second = queue_audit(BenchmarkSpec(kind="standalone", n=40, poison_fraction=0.1, length=6, seed=5))
    with Running(sessions, max_running=2) as dispatcher:
        _wait(lambda: all(_audit(sessions, a).status == "succeeded" for a in (first, second)), timeout=400,
              what="both audits to succeed")
    a, b = _audit(sessions, first), _audit(sessions, second)
    assert max(a.started_at, b.started_at) < min(a.finished_at, b.finished_at)       # they overlapped
    for audit in (a, b):
        with sessions() as session:
            report = repository.get_report(session, audit.id)
        assert report is not None and "<html" in report.html.lower()
        assert report.body["trials"] == len(_stored_keys(sessions, audit.id)) == audit.trials_done
        assert audit.progress == 1.0 and audit.worker_id == dispatcher.config.worker_id
    assert {s.audit_id: (s.state, s.stored_before, s.already_stored) for s in dispatcher.finished} == {
        first: ("succeeded", 0, 0), second: ("succeeded", 0, 0)}


def test_cancel_stops_a_running_audit_within_seconds(cluster, sessions, queue_audit, empty_queue):
    audit_id = queue_audit(BenchmarkSpec(kind="standalone", n=200, poison_fraction=0.05, length=6, seed=1),
                           confirm_seeds=6)
    with Running(sessions, max_running=1):
        _wait(lambda: _stored_keys(sessions, audit_id), timeout=200, what="the first stored outcomes")
        with sessions() as session:
            tenant = session.get(Audit, audit_id).tenant_id
            repository.request_cancel(session, tenant, audit_id)
        asked = time.monotonic()
        _wait(lambda: _audit(sessions, audit_id).status == "canceled", timeout=30, what="the cancel")
        assert time.monotonic() - asked < 10
    with sessions() as session:
        assert repository.get_report(session, audit_id) is None


def _start_worker(cluster, database_url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "auditor.cli", "worker", "--database-url", database_url,
                             "--ray-address", cluster.address, "--max-running-audits", "1", "--retrainers", "2",
                             "--heartbeat-seconds", "0.5", "--stale-after-seconds", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_dispatcher_is_resumed_without_retraining_stored_trials(cluster, sessions, database_url,
                                                                        queue_audit, empty_queue):
    audit_id = queue_audit(BenchmarkSpec(kind="standalone", n=100, poison_fraction=0.05, length=6, seed=2))
    first = _start_worker(cluster, database_url)
    try:
        _wait(lambda: len(_stored_keys(sessions, audit_id)) >= 20, timeout=300, what="20 stored outcomes")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    stored_at_kill = _stored_keys(sessions, audit_id)
    assert _audit(sessions, audit_id).status == "running"            # the dead worker still holds it

    second = _start_worker(cluster, database_url)
    try:
        _wait(lambda: _audit(sessions, audit_id).status == "succeeded", timeout=400, what="the resumed audit")
    finally:
        second.send_signal(signal.SIGINT)
        log = second.communicate(timeout=60)[0]
    line = re.search(rf"audit {audit_id} succeeded: (\d+) outcomes stored before this run, (\d+) trained in "
                     rf"this run, (\d+) of them already stored", log)
    assert line, log
    before, trained, already = map(int, line.groups())
    final = _stored_keys(sessions, audit_id)
    assert before == len(stored_at_kill) >= 20
    assert already == 0                                               # no stored trial trained again
    assert before + trained == len(final) and stored_at_kill <= final
    with sessions() as session:
        assert repository.get_report(session, audit_id).body["trials"] == len(final)
        assert session.scalar(select(func.count()).select_from(TrialOutcome)
                              .where(TrialOutcome.audit_id == audit_id)) == len(final)


def test_progress_counts_the_trials_of_the_audits_task():
    """A classification audit of 600 examples plans max(160, n) = 600 search trials, not the
    226 of a regression set of that size, plus the 3 x 8 of its harm gate and as many of its
    confirmation."""
    rng = np.random.default_rng(0)
    classes = validate_arrays({"x": rng.normal(size=(600, 8)), "y": np.arange(600) % 10,
                               "x_val": rng.normal(size=(50, 8)), "y_val": np.arange(50) % 10})
    regression = validate_arrays({"x": rng.normal(size=(600, 8)), "y": rng.normal(size=600)})
    assert planned_trials(AuditConfig(), n=classes.n, task=classes.task) == 600 + 2 * 24
    assert planned_trials(AuditConfig(), n=regression.n, task=regression.task) == 226 + 2 * 24


def test_an_internal_error_shows_tenants_an_error_id_and_logs_the_traceback(sessions, queue_audit, empty_queue,
                                                                           caplog):
    """On a machine without CUDA, torch's own AssertionError stays in the log."""
    audit_id = queue_audit(device="cuda:0")
    dispatcher = Dispatcher(sessions, lambda problem, stop: InlineExecutor(problem, stop=stop),
                            DispatcherConfig(poll_seconds=0.1, heartbeat_seconds=0.5))
    with caplog.at_level(logging.ERROR, logger="auditor.dispatcher"):
        assert dispatcher.poll() == [audit_id]
        _wait(lambda: _audit(sessions, audit_id).status == "failed", timeout=120, what="the audit to fail")
        dispatcher.shutdown()
    error = _audit(sessions, audit_id).error
    error_id = re.fullmatch(r"internal error \(error id ([0-9a-f]{12})\); the audit could not be completed",
                            error).group(1)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and audit_id in logged[0].getMessage()
    assert "Traceback" in logged[0].getMessage() and "CUDA" in logged[0].getMessage()
    assert "CUDA" not in error and "Traceback" not in error


def test_a_set_of_several_channels_and_outputs_runs_to_a_stored_report(sessions, queue_audit, empty_queue):
    """The ssm built-in widens to the data's channels and outputs (auditor/mimo.py); short
    training (max_steps 100) keeps this a test of the path, not of the detection."""
    audit_id = queue_audit(BenchmarkSpec(kind="standalone", n=20, poison_fraction=0.1, length=6, channels=3,
                                         outputs=2, n_val=20, seed=3), budget=30, max_steps=100)
    dispatcher = Dispatcher(sessions, lambda problem, stop: InlineExecutor(problem, stop=stop),
                            DispatcherConfig(poll_seconds=0.1, heartbeat_seconds=0.5))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                    # small models: one thread is several times faster on busy cores
    try:
        assert dispatcher.poll() == [audit_id]
        _wait(lambda: _audit(sessions, audit_id).status in ("succeeded", "failed"), timeout=300,
              what="the audit to finish")
    finally:
        dispatcher.shutdown()
        torch.set_num_threads(threads)
    audit = _audit(sessions, audit_id)
    assert audit.status == "succeeded", audit.error
    with sessions() as session:
        report = repository.get_report(session, audit_id)
    assert report.body["trials"] == len(_stored_keys(sessions, audit_id)) > 0
    assert report.body["reproduce"]["dataset"]["channels"] == 3 and len(report.body["scores"]) == 20
    assert "<html" in report.html.lower()
