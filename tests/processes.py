"""Run ``auditor`` commands as real processes, and wait for a started server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def auditor(*args: str, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``auditor ARGS`` to completion, capturing its output as text."""
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def start_auditor(*args: str, env: dict | None = None, cwd=None) -> subprocess.Popen:
    """Start ``auditor ARGS`` in the background, stdout and stderr merged into one text pipe."""
    return subprocess.Popen([sys.executable, "-m", "auditor.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, base_url: str, *, timeout: float) -> None:
    """Poll ``base_url``/api/v1/health until it answers 200; fail if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.stdout.read() if process.stdout else f"exited {process.returncode}"
        try:
            if httpx.get(f"{base_url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{base_url} did not come up"
        time.sleep(0.2)
