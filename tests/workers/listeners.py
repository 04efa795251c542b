"""Find the processes of a local Ray cluster and the TCP ports they listen on.

A cluster's processes are the descendants of the process that started it, plus every
process whose command line names the cluster's session (core workers and agents that a
raylet started, which stay in the session after their parent is gone).
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

import ray  # noqa: F401  (Ray ships psutil; importing Ray puts it on the path)
import psutil

SESSION = re.compile(r"session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+")


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port} pid {self.pid} {self.command[:100]}"


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6 (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def sessions_of(processes: list[psutil.Process]) -> set[str]:
    """The Ray session names (``session_<date>_<pid>``) that the command lines mention."""
    found = set()
    for process in processes:
        try:
            found.update(SESSION.findall(" ".join(process.cmdline())))
        except psutil.Error:
            pass
    return found


def cluster_processes(root: int | None, *, sessions: set[str] = frozenset()) -> dict[int, psutil.Process]:
    """The processes of the cluster started by the process ``root`` (whose descendants are
    searched while it lives) and of ``sessions`` (and of the sessions its descendants name)."""
    found: dict[int, psutil.Process] = {}
    if root is not None:
        try:
            parent = psutil.Process(root)
            found[root] = parent
            found.update({child.pid: child for child in parent.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    names = set(sessions) | sessions_of(list(found.values()))
    if names:
        for process in psutil.process_iter(["cmdline"]):
            command = " ".join(process.info["cmdline"] or ())
            if any(name in command for name in names):
                found[process.pid] = process
    return found


def listeners(processes: dict[int, psutil.Process] | list[psutil.Process]) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) of the living ``processes``."""
    result = []
    for process in (processes.values() if isinstance(processes, dict) else processes):
        try:
            command = " ".join(process.cmdline()) or process.name()
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    result.append(Listener(process.pid, command, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:                           # exited meanwhile
            pass
    return result


def alive(processes: dict[int, psutil.Process]) -> list[psutil.Process]:
    """The ``processes`` still running (zombies count as gone; ``Process`` objects also
    notice a recycled pid)."""
    living = []
    for process in processes.values():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.Error:
            pass
    return living


def wait_for_listeners(root: int, *, kinds: tuple[str, ...], timeout: float) -> dict[int, psutil.Process]:
    """The cluster's processes once one whose command line contains each of ``kinds``
    listens (Ray starts some of them after ``ray.init`` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        processes = cluster_processes(root)
        commands = [listener.command for listener in listeners(processes)]
        if all(any(kind in command for command in commands) for kind in kinds):
            return processes
        assert time.monotonic() < deadline, f"no listener of {kinds} after {timeout} s: {commands}"
        time.sleep(0.5)
