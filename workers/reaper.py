"""End a local Ray cluster's processes once the process that started the cluster is gone.

Ray ties the processes it starts itself (GCS, raylet, dashboard head, monitors) to the
driver on Linux, and core workers exit with their raylet; but the dashboard and runtime-env
agents that the raylet starts wait up to a minute before they exit, listening all along.
:func:`workers.service.start_local` therefore runs this file as a small process beside the
cluster: ``python reaper.py PID PSUTIL_PARENT_DIR``. It notes the descendants of ``PID``
every ``INTERVAL`` seconds, and kills those still running once ``PID`` exits, however it
exits (SIGKILL included). It imports only the standard library and psutil (which Ray ships).
"""

from __future__ import annotations

import os
import signal
import sys
import time

INTERVAL = 0.5


def watch(pid: int, *, interval: float = INTERVAL) -> int:
    """Wait for ``pid`` (this process's parent) to exit, then kill its former descendants;
    return how many were killed."""
    import psutil

    parent = psutil.Process(pid)
    seen: dict[tuple[int, float], psutil.Process] = {}
    rounds = 0
    while os.getppid() == pid:                       # re-parented when the parent dies
        try:
            for child in parent.children(recursive=True):
                if child.pid != os.getpid():
                    seen.setdefault((child.pid, child.create_time()), child)
        except psutil.Error:
            pass
        rounds += 1
        if rounds % 120 == 0:                         # forget the processes that ended
            seen = {key: process for key, process in seen.items() if process.is_running()}
        time.sleep(interval)
    return _kill(seen.values())


def _kill(processes) -> int:
    """SIGKILL each of ``processes`` that still runs (psutil checks the start time, so a
    reused pid is left alone)."""
    killed = 0
    for process in processes:
        try:
            if process.is_running():
                process.kill()
                killed += 1
        except Exception:                             # gone, or not ours: nothing to end
            pass
    return killed


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # Ctrl-C goes to the parent, which shuts down
    sys.path.append(sys.argv[2])
    watch(int(sys.argv[1]))
