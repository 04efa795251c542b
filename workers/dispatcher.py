"""The dispatcher: claims queued audits from the database and drives them to a report.

    loop every poll_seconds:
        requeue running audits whose heartbeat is older than stale_after_seconds
        claim queued audits while fewer than max_running run here (one thread each): the
            oldest audit of a tenant with the fewest running audits, never one of a tenant
            at max_running_per_tenant (counted over every dispatcher)

Each running audit heartbeats every ``heartbeat_seconds``: a cancel request sets its
executor's stop event (honoured within about a second), and an audit that was taken away
(requeued after a stall, then claimed by another dispatcher) stops without writing. Every
outcome is stored as it arrives, keyed by (audit, trial), and a claimed audit starts from
the outcomes already stored, so a dispatcher that died mid-audit costs only the chunks in
flight: the next claimer retrains no stored trial.

Claiming is safe with several dispatchers on one database (row locks with SKIP LOCKED on
PostgreSQL; SQLite serializes writers), see :func:`store.repository.claim_next_audit`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from auditor.engine import build_problem, run_audit
from auditor.config import AuditConfig, planned_trials
from auditor.data import DatasetError, load_dataset
from auditor.executors import Canceled, Executor
from auditor.trials import Outcome, Problem, Trial
from store import repository
from store.blobs import uri_to_path
from store.models import Audit, Dataset

log = logging.getLogger("auditor.dispatcher")

ExecutorFactory = Callable[[Problem, threading.Event], Executor]


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class DispatcherConfig:
    """How a dispatcher polls, heartbeats and shares its executor."""

    worker_id: str = field(default_factory=default_worker_id)
    max_running: int = 2
    max_running_per_tenant: int | None = 1   # running audits of one tenant, over every dispatcher; None: no limit
    poll_seconds: float = 1.0
    heartbeat_seconds: float = 2.0
    stale_after_seconds: float = 30.0
    progress_seconds: float = 1.0       # least time between two progress writes of one audit


@dataclass
class RunStats:
    """What one run of one audit did; logged when it ends."""

    audit_id: str
    stored_before: int = 0              # outcomes found stored when this run started
    trained: int = 0                    # outcomes this run produced
    already_stored: int = 0             # of those, how many the database already had
    state: str = "running"


class Dispatcher:
    """Runs queued audits on ``make_executor``'s executors (one per audit).

    Parameters
    ----------
    sessions : sessionmaker
    make_executor : callable
        ``(problem, stop_event) -> Executor``; e.g. a :class:`workers.executor.RayExecutor`
        on a shared :class:`workers.pool.RetrainerPool`.
    config : DispatcherConfig
    """

    def __init__(self, sessions: sessionmaker[Session], make_executor: ExecutorFactory,
                 config: DispatcherConfig | None = None):
        self.sessions = sessions
        self.make_executor = make_executor
        self.config = config or DispatcherConfig()
        self.threads: dict[str, threading.Thread] = {}
        self.stops: dict[str, threading.Event] = {}
        self.finished: list[RunStats] = []
        self.lock = threading.Lock()

    # --- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set, then give running audits back to the queue."""
        log.info("dispatcher %s: polling for audits (at most %d at once)", self.config.worker_id,
                 self.config.max_running)
        while not stop.is_set():
            try:
                self.poll()
            except Exception:                       # a database hiccup must not end the loop
                log.exception("dispatcher poll failed; retrying")
            stop.wait(self.config.poll_seconds)
        self.shutdown()

    def poll(self) -> list[str]:
        """Requeue stale audits, then claim queued ones into free slots; return the claimed ids."""
        self._reap()
        with self.sessions() as session:
            stale = repository.requeue_stale(session, timedelta(seconds=self.config.stale_after_seconds))
        for audit_id in stale:
            log.warning("audit %s: heartbeat stale, requeued", audit_id)
        claimed = []
        while len(self.threads) < self.config.max_running:
            with self.sessions() as session:
                audit = repository.claim_next_audit(session, self.config.worker_id,
                                                    max_running_per_tenant=self.config.max_running_per_tenant)
            if audit is None:
                break
            claimed.append(audit.id)
            self._start(audit.id)
        return claimed

    def running(self) -> list[str]:
        self._reap()
        return list(self.threads)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop every running audit and put it back in the queue for the next dispatcher."""
        for event in list(self.stops.values()):
            event.set()
        for thread in list(self.threads.values()):
            thread.join(timeout)
        self._reap()

    def _start(self, audit_id: str) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._run_one, args=(audit_id, stop), name=f"audit-{audit_id[:8]}",
                                  daemon=True)
        self.stops[audit_id] = stop
        self.threads[audit_id] = thread
        thread.start()

    def _reap(self) -> None:
        for audit_id, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[audit_id]
                del self.stops[audit_id]

    # --- one audit -------------------------------------------------------------------------

    def _run_one(self, audit_id: str, stop: threading.Event) -> None:
        stats = RunStats(audit_id)
        worker = self.config.worker_id
        beat = _Heartbeat(self.sessions, audit_id, worker, self.config.heartbeat_seconds, stop)
        try:
            stats.state = self._drive(audit_id, stop, stats, beat)
        except DatasetError as exc:                 # the tenant's own input: say what is wrong with it
            stats.state = "failed"
            with self.sessions() as session:
                repository.fail_audit(session, audit_id, f"cannot audit this dataset: {exc}", worker_id=worker)
        except Exception:                           # a bug or a broken cluster: log it, keep serving
            stats.state = "failed"
            with self.sessions() as session:
                repository.fail_audit(session, audit_id, internal_error(audit_id), worker_id=worker)
        finally:
            beat.stop()
            log.info("audit %s %s: %d outcomes stored before this run, %d trained in this run, "
                     "%d of them already stored", audit_id, stats.state, stats.stored_before, stats.trained,
                     stats.already_stored)
            with self.lock:
                self.finished.append(stats)

    def _drive(self, audit_id: str, stop: threading.Event, stats: RunStats, beat: _Heartbeat) -> str:
        worker = self.config.worker_id
        with self.sessions() as session:
            audit = session.get(Audit, audit_id)
            row = session.get(Dataset, audit.dataset_id)
            uri, raw_config = row.uri, dict(audit.config)
            stored = repository.list_outcomes(session, audit_id)
        dataset = load_dataset(uri_to_path(uri))
        config = AuditConfig.from_stored(raw_config)
        problem = build_problem(dataset, config, allow_import=False)   # registered models only
        outcomes = {o.trial_key: Outcome.from_dict(o.metrics) for o in stored}
        stats.stored_before = len(outcomes)
        log.info("audit %s: running on %s with %d stored outcomes", audit_id, worker, len(outcomes))
        beat.start()
        executor = self.make_executor(problem, stop)
        progress = _ProgressWriter(self.sessions, audit_id, worker, outcomes, self.config.progress_seconds,
                                   expected=planned_trials(config, n=dataset.n, task=dataset.task))

        def store(pairs: list[tuple[Trial, Outcome]]) -> None:
            rows = [(t.key, t.mask, t.seed, o.to_dict()) for t, o in pairs]
            with self.sessions() as session:
                inserted = repository.store_outcomes(session, audit_id, rows)
            stats.trained += len(rows)
            stats.already_stored += len(rows) - inserted

        try:
            result = run_audit(dataset, config, executor=executor, outcomes=outcomes, store=store,
                               progress=progress)
        except Canceled:
            with self.sessions() as session:
                if beat.verdict == repository.HEARTBEAT_CANCEL:
                    repository.mark_canceled(session, audit_id, worker_id=worker)
                    return "canceled"
                if beat.verdict == repository.HEARTBEAT_LOST:
                    return "lost"
                repository.release_audit(session, audit_id, worker)   # this dispatcher is shutting down
                return "released"
        finally:
            executor.close()
        from auditor.report import build_report, render_html

        report = build_report(result, dataset, config)
        with self.sessions() as session:
            done = repository.finish_audit(session, audit_id, report=report, html=render_html(report),
                                           worker_id=worker, trials_done=len(result.outcomes))
        return "succeeded" if done else "lost"


def internal_error(audit_id: str) -> str:
    """Log the exception being handled with a new error id; return the message tenants see.

    The message names the id and nothing of the exception, whose text may reveal the
    service's internals (paths, devices, library versions); operators find the traceback
    in the log by the id.
    """
    error_id = uuid.uuid4().hex[:12]
    log.error("audit %s failed (error id %s):\n%s", audit_id, error_id, traceback.format_exc())
    return f"internal error (error id {error_id}); the audit could not be completed"


class _Heartbeat:
    """Beats every ``seconds`` in a thread; sets ``stop`` on a cancel request or a lost claim."""

    def __init__(self, sessions: sessionmaker, audit_id: str, worker_id: str, seconds: float,
                 stop: threading.Event):
        self.sessions, self.audit_id, self.worker_id, self.seconds = sessions, audit_id, worker_id, seconds
        self.audit_stop = stop
        self.done = threading.Event()
        self.verdict = repository.HEARTBEAT_RUN
        self.thread = threading.Thread(target=self._loop, name=f"heartbeat-{audit_id[:8]}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(self.seconds + 5)

    def _loop(self) -> None:
        while not self.done.wait(self.seconds):
            try:
                with self.sessions() as session:
                    verdict = repository.heartbeat(session, self.audit_id, self.worker_id)
            except Exception:
                log.exception("audit %s: heartbeat failed; retrying", self.audit_id)
                continue
            if verdict != repository.HEARTBEAT_RUN:
                self.verdict = verdict
                self.audit_stop.set()
                return


class _ProgressWriter:
    """The audit loop's progress callback: writes (fraction, trials, stage) at most every ``seconds``."""

    def __init__(self, sessions: sessionmaker, audit_id: str, worker_id: str, outcomes: dict, seconds: float,
                 *, expected: int):
        self.sessions, self.audit_id, self.worker_id = sessions, audit_id, worker_id
        self.outcomes, self.seconds, self.expected = outcomes, seconds, max(expected, 1)
        self.last = 0.0

    def __call__(self, done: int, total: int, phase: str) -> None:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return
        self.last = now
        trials = len(self.outcomes)
        with self.sessions() as session:
            repository.set_progress(session, self.audit_id, min(0.99, trials / self.expected), trials_done=trials,
                                    stage=phase[:64], worker_id=self.worker_id)
