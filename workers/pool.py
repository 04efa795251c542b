"""A pool of retrainer actors shared by every audit a process runs.

The pool sizes itself to the cluster (one actor per GPU, else one per CPU slot), or to a
fixed count so that pending actors ask an autoscaler for nodes. It knows which actors are
alive: a new actor counts as ready only after it answered a ping, so no work waits on an
actor that is still being placed. When an actor dies (its node removed, its process
killed) the pool restarts it: a fresh actor takes its slot and becomes ready once Ray has
placed it on a surviving or new node. (Ray's own actor restart would queue new calls on a
dead actor until it is back, which can be never on a shrunken cluster; restarting here
lets the executor route work to live actors meanwhile.)

Executors take the ready actor with the least work outstanding, so concurrent audits, each
keeping a bounded number of chunks in flight, share the actors evenly.
"""

from __future__ import annotations

import math
import threading
import time

import ray

from workers.retrainer import Retrainer

RESTART_DELAY_SECONDS = 1.0     # wait before replacing an actor that died before it answered


class RetrainerPool:
    """Retrainer actors and their health.

    Parameters
    ----------
    actors : int, optional
        How many actors; default: the cluster's GPUs when ``gpus_per_actor`` > 0, else its
        CPUs divided by ``cpus_per_actor``.
    gpus_per_actor, cpus_per_actor : float
        Resources each actor reserves.
    threads : int
        torch threads per actor (1 is as fast for these small models and leaves cores free).
    """

    def __init__(self, *, actors: int | None = None, gpus_per_actor: float = 0.0, cpus_per_actor: float = 1.0,
                 threads: int = 1):
        if actors is None:
            resources = ray.cluster_resources()
            if gpus_per_actor > 0:
                actors = int(resources.get("GPU", 0) // gpus_per_actor)
            else:
                actors = int(resources.get("CPU", 1) // cpus_per_actor)
        if actors < 1:
            raise ValueError("the Ray cluster has no room for a retrainer actor; pass a number of actors to wait "
                             "for the autoscaler")
        self.remote = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor, max_restarts=0)(Retrainer)
        self.threads = threads
        self.actors = [self.remote.remote(threads=threads) for _ in range(actors)]
        self.restarts = 0
        self.lock = threading.Lock()
        self.ready: set[int] = set()
        self.load = [0] * actors                         # chunks outstanding per actor
        self.pings: dict[ray.ObjectRef, int] = {}
        self.restart_at: dict[int, float] = {}           # actor slot -> when to start a new actor
        for i in range(actors):
            self._ping(i)

    def _ping(self, i: int) -> None:
        self.pings[self.actors[i].ping.remote()] = i

    def refresh(self, timeout: float = 0.0) -> int:
        """Collect answered pings (waiting up to ``timeout`` s for one); return the ready count."""
        with self.lock:
            now = time.monotonic()
            for i, at in list(self.restart_at.items()):
                if at <= now:
                    del self.restart_at[i]
                    self._restart(i)
            pending = list(self.pings)
        if pending:
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=timeout)
            with self.lock:
                for ref in done:
                    i = self.pings.pop(ref, None)
                    if i is None:
                        continue
                    try:
                        ray.get(ref)
                        self.ready.add(i)
                    except ray.exceptions.RayError:
                        self.restart_at[i] = time.monotonic() + RESTART_DELAY_SECONDS
        with self.lock:
            return len(self.ready)

    def acquire(self) -> tuple[int, ray.actor.ActorHandle] | None:
        """The ready actor with the least outstanding work, as (slot, handle), its load
        counted up; None when no actor is ready."""
        with self.lock:
            if not self.ready:
                return None
            i = min(self.ready, key=lambda j: (self.load[j], j))
            self.load[i] += 1
            return i, self.actors[i]

    def release(self, i: int, actor: ray.actor.ActorHandle, *, failed: bool = False) -> None:
        """A chunk on ``actor`` (slot ``i``) finished; ``failed``: it died, start a new one in its slot."""
        with self.lock:
            self.load[i] = max(self.load[i] - 1, 0)
            if failed and i in self.ready and self.actors[i] is actor:   # the first to notice restarts it
                self.ready.discard(i)
                self._restart(i)

    def _restart(self, i: int) -> None:
        """Replace actor ``i`` by a new one (caller holds the lock)."""
        try:
            ray.kill(self.actors[i], no_restart=True)
        except ray.exceptions.RayError:
            pass
        self.actors[i] = self.remote.remote(threads=self.threads)
        self.restarts += 1
        self._ping(i)

    def ready_count(self) -> int:
        with self.lock:
            return len(self.ready)

    def chunk_size(self, trials: int, *, largest: int = 256) -> int:
        """Split ``trials`` evenly over the pool's actors, at most ``largest`` per chunk.

        It depends on the pool's size, never on which actors are up: a trial's outcome can
        differ in the last bits with the batch it trains in, so an audit disturbed by a
        failure must chunk exactly as an undisturbed one to give the same outcomes.
        """
        return max(1, min(largest, math.ceil(trials / len(self.actors))))

    def stats(self) -> list[dict]:
        """Each live actor's device and trials trained (skips actors that do not answer)."""
        refs = [a.stats.remote() for a in self.actors]
        out = []
        for ref in refs:
            try:
                out.append(ray.get(ref, timeout=10))
            except ray.exceptions.RayError:
                continue
        return out

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
