"""The Ray executor: an audit's trials in chunks on the shared retrainer actors.

The problem (data set, student, optimizer) goes to the object store once; every chunk
names it by reference, and each actor fetches it once. Chunks stream back in the order
they finish (``ray.wait``), with at most about one chunk per ready actor in flight for this
audit, so concurrent audits interleave fairly on the actors' queues. A chunk whose actor
died (node removed, process killed) goes back to the queue and runs on another actor:
trials are deterministic, so a retried chunk gives the same outcomes. (Chunks depend only
on the trial list and the pool's size, because an outcome may differ in its last bits with
the batch it trained in.)
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Iterator

import ray

from auditor.executors import Executor
from auditor.trials import Outcome, Problem, Trial
from workers.pool import RetrainerPool

WAIT_SECONDS = 0.5          # how often a waiting executor checks for a stop request
# Failures that lose a chunk but not the audit: rerun the chunk elsewhere.
RETRYABLE = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError,
             ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)


class RayExecutor(Executor):
    """Runs trials of ``problem`` on the actors of ``pool``.

    Parameters
    ----------
    problem : Problem
    pool : RetrainerPool
    largest_chunk : int
        Most trials per chunk (one batched training call on an actor).
    stop : threading.Event, optional
        Set it to cancel: :meth:`run` raises :class:`auditor.executors.Canceled`.
    """

    def __init__(self, problem: Problem, pool: RetrainerPool, *, largest_chunk: int = 256,
                 stop: threading.Event | None = None):
        super().__init__(problem, stop=stop)
        self.pool = pool
        self.largest_chunk = largest_chunk
        self.problem_ref = ray.put(problem)
        self.problem_key = uuid.uuid4().hex
        self.trained = 0            # trials whose outcomes came back (retries counted once)
        self.retried_chunks = 0

    def run(self, trials: list[Trial]) -> Iterator[list[Outcome]]:
        self._await_ready()
        size = self.pool.chunk_size(len(trials), largest=self.largest_chunk)
        queue = deque(trials[i:i + size] for i in range(0, len(trials), size))
        in_flight: dict[ray.ObjectRef, tuple[tuple, list[Trial]]] = {}
        try:
            while queue or in_flight:
                self.check()
                self._submit(queue, in_flight)
                if not in_flight:                        # every actor is down: wait for one to return
                    self.pool.refresh(timeout=WAIT_SECONDS)
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_SECONDS)
                for ref in done:
                    actor, chunk = in_flight.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except RETRYABLE:
                        self.pool.release(*actor, failed=True)
                        self.retried_chunks += 1
                        queue.appendleft(chunk)
                        continue
                    self.pool.release(*actor)
                    self.trained += len(outcomes)
                    yield outcomes
                self.pool.refresh()
        finally:
            for ref, (actor, _) in in_flight.items():    # canceled or abandoned: free the slots
                try:
                    ray.cancel(ref)
                except ray.exceptions.RayError:
                    pass
                self.pool.release(*actor)

    def _submit(self, queue: deque, in_flight: dict) -> None:
        limit = max(self.pool.ready_count(), 1)
        while queue and len(in_flight) < limit:
            actor = self.pool.acquire()
            if actor is None:
                return
            chunk = queue.popleft()
            ref = actor[1].train.remote(self.problem_key, [self.problem_ref], chunk)
            in_flight[ref] = (actor, chunk)

    def _await_ready(self) -> None:
        while self.pool.refresh(timeout=WAIT_SECONDS) == 0:
            self.check()
