"""The local Ray cluster that ``auditor serve`` starts: reachable from this machine only, and
gone soon after ``serve`` is killed. Real processes: ``auditor serve`` on SQLite, its Ray
processes found with psutil, their listening sockets read from the kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import free_port, start_auditor, wait_until_healthy
from tests.workers.listeners import alive, cluster_processes, is_loopback, listeners, sessions_of, wait_for_listeners

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
# The listeners Ray 2.x starts on a head node: GCS, raylet (node and object manager), the
# agents the raylet starts, and the core workers of the retrainer actors.
KINDS = ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::Retrainer")
GONE_WITHIN = 15.0                                    # seconds after SIGKILL; Ray's agents alone take ~60


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """``auditor serve`` with its dispatcher (and so its local Ray cluster) on a fresh SQLite
    database; stopped at the end unless a test killed it."""
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDITOR_", "RAY_"))}
    env["PYTHONPATH"] = str(ROOT)
    process = start_auditor("serve", "--port", str(port), "--data-dir", str(tmp / "data"), "--no-access-log",
                            "--database-url", f"sqlite:///{tmp / 'a.db'}", cwd=tmp, env=env)
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}", timeout=120)
        wait_for_listeners(process.pid, kinds=KINDS, timeout=120)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=120)


def test_every_ray_listener_is_on_loopback(serve):
    found = listeners(cluster_processes(serve.pid))
    kinds = {kind for kind in KINDS for listener in found if kind in listener.command}
    assert kinds == set(KINDS), f"no listener of {set(KINDS) - kinds}"
    exposed = [str(listener) for listener in found if not is_loopback(listener.ip)]
    assert not exposed, "listening beyond loopback:\n" + "\n".join(exposed)
    assert all(listener.port != 8265 for listener in found), "the dashboard's web UI is on"


def test_no_ray_listener_outlives_a_sigkill_of_serve(serve):
    processes = cluster_processes(serve.pid)
    sessions = sessions_of(list(processes.values()))
    assert sessions and len(listeners(processes)) >= len(KINDS)
    serve.kill()
    serve.wait(timeout=30)
    deadline = time.monotonic() + GONE_WITHIN
    while True:
        processes.update(cluster_processes(None, sessions=sessions))
        left = listeners(alive(processes))
        if not left:
            break
        assert time.monotonic() < deadline, (f"{GONE_WITHIN} s after SIGKILL still listening:\n"
                                             + "\n".join(map(str, left)))
        time.sleep(0.5)
    assert not alive(processes), [p.pid for p in alive(processes)]


def test_the_reaper_kills_the_descendants_of_a_killed_process(tmp_path):
    """Without Ray: a parent starts the reaper and a grandchild that ignores its parents'
    death; SIGKILL of the parent ends the grandchild within a second or so."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from workers.service import start_reaper\n"
        "start_reaper()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import subprocess, sys, time;"
        " subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(600)\"]); time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while len(cluster_processes(child)) < 2:      # the grandchild has started
            assert time.monotonic() < deadline
            time.sleep(0.1)
        family = cluster_processes(parent.pid)
        time.sleep(1.5)                               # the reaper has seen them
        assert len(alive(family)) == 4                # parent, reaper, child, grandchild
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while alive(family):
        assert time.monotonic() < deadline, [p.cmdline() for p in alive(family)]
        time.sleep(0.2)
