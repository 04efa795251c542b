"""Start the workers of a service: connect to Ray, build the retrainer pool, run a dispatcher.

Used by ``auditor serve`` (in a thread beside the API) and ``auditor worker`` (alone).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import ray
from ray._private import ray_constants

from store.engine import make_engine, make_sessionmaker
from workers.dispatcher import Dispatcher, DispatcherConfig
from workers.executor import RayExecutor
from workers.pool import RetrainerPool


LOOPBACK = "127.0.0.1"


def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``),
    or start a new local one when ``address`` is None (never joining a cluster that happens
    to run on this machine; see :func:`start_local`). Does nothing if already connected."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        start_local(num_cpus=num_cpus)


def start_local(*, num_cpus: int | None = None) -> None:
    """Start a single-node Ray cluster owned by this process, reachable from this machine only.

    Ray's own ports take no credentials from other hosts' point of view, so every process
    of the cluster (GCS, raylet and object manager, core workers, dashboard, metrics and
    runtime-env agents, autoscaler monitor) listens on the loopback address, and the
    dashboard's web UI is not started. On Linux Ray resolves a node address of
    ``127.0.0.1`` to the machine's outward address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
    is ``0`` (the single-machine mode it uses on macOS and Windows), so that mode is set for
    this process and the processes it starts; a process that started a local cluster must
    not join another one afterwards. Ray ties the processes it starts to this one
    (``PR_SET_PDEATHSIG``), and :func:`start_reaper` ends the agents the raylet starts, which
    would otherwise keep listening for a minute after this process is killed.
    """
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"   # the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False                          # this one: read at import
    start_reaper()
    ray.init(address="local", _node_ip_address=LOOPBACK, num_cpus=num_cpus, include_dashboard=False,
             log_to_driver=False)
    node = ray.util.get_node_ip_address()
    if node != LOOPBACK:                              # a Ray whose node-address rules changed
        ray.shutdown()
        raise RuntimeError(f"the local Ray cluster came up on {node}, not {LOOPBACK}; refusing to run it")


_reaper: subprocess.Popen | None = None


def start_reaper() -> subprocess.Popen:
    """Start (once per process) the watcher that kills this process's descendants when it
    exits, however it exits (see :mod:`workers.reaper`)."""
    global _reaper
    if _reaper is None or _reaper.poll() is not None:
        import psutil

        script = Path(__file__).with_name("reaper.py")
        _reaper = subprocess.Popen([sys.executable, "-I", str(script), str(os.getpid()),
                                    str(Path(psutil.__file__).parent.parent)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL)
    return _reaper


class Workers:
    """A dispatcher on a retrainer pool, running in a background thread.

    Parameters
    ----------
    database_url : str
    ray_address : str, optional
        None starts a local Ray cluster in this process.
    max_running : int
        Audits run at once by this dispatcher.
    retrainers : int, optional
        Actors in the pool (default: one per GPU, or per CPU when ``retrainer_gpus`` is 0).
    retrainer_gpus : float
        GPUs per actor (0: CPU actors).
    max_running_per_tenant : int, optional
        Running audits of one tenant, counted over every dispatcher on the database.
    """

    @classmethod
    def from_settings(cls, settings) -> Workers:
        """Workers configured by :class:`api.settings.Settings` (``AUDITOR_*`` variables)."""
        return cls(database_url=settings.database_url, ray_address=settings.ray_address,
                   max_running=settings.max_running_audits, retrainers=settings.retrainers,
                   retrainer_gpus=settings.retrainer_gpus, heartbeat_seconds=settings.heartbeat_seconds,
                   stale_after_seconds=settings.stale_after_seconds,
                   max_running_per_tenant=settings.max_running_audits_per_tenant)

    def __init__(self, *, database_url: str, ray_address: str | None = None, max_running: int = 2,
                 retrainers: int | None = None, retrainer_gpus: float = 0.0, heartbeat_seconds: float = 2.0,
                 stale_after_seconds: float = 30.0, poll_seconds: float = 1.0,
                 max_running_per_tenant: int | None = 1):
        connect(ray_address)
        self.pool = RetrainerPool(actors=retrainers, gpus_per_actor=retrainer_gpus)
        self.engine = make_engine(database_url, pool_size=max_running + 2)
        config = DispatcherConfig(max_running=max_running, heartbeat_seconds=heartbeat_seconds,
                                  stale_after_seconds=stale_after_seconds, poll_seconds=poll_seconds,
                                  max_running_per_tenant=max_running_per_tenant)
        self.dispatcher = Dispatcher(make_sessionmaker(self.engine),
                                     lambda problem, stop: RayExecutor(problem, self.pool, stop=stop), config)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.dispatcher.run, args=(self.stop_event,), name="dispatcher",
                                       daemon=True)

    def start(self) -> Workers:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling, give running audits back to the queue, release the actors."""
        self.stop_event.set()
        self.thread.join(timeout)
        self._release()

    def run_forever(self) -> None:
        """Run the dispatcher in this thread until SIGTERM or Ctrl-C; running audits go back
        to the queue for the next dispatcher."""
        import signal

        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        try:
            self.dispatcher.run(self.stop_event)
        except KeyboardInterrupt:
            self.dispatcher.shutdown()
        finally:
            self._release()

    def _release(self) -> None:
        self.pool.shutdown()
        self.engine.dispose()
