"""Load test: many concurrent clients polling one audit's status.

By default this starts the API alone (uvicorn, as ``auditor serve --no-workers
--no-access-log`` runs it) on a fresh PostgreSQL database (on ``AUDITOR_TEST_POSTGRES_URL`` or
the local server), with the per-key rate limit raised out of the way, creates a key, a
dataset and an audit, then runs ``--clients`` concurrent clients (asyncio + httpx) for
``--duration`` seconds, each reading ``GET /api/v1/audits/{id}`` in a loop. It prints the
p50/p99/max latency beside the p99 goal (``--goal-ms``, 100), the request count, the error
count, and the CPU time per request of the server and of the load client (both share the
machine). With ``--url`` and ``--api-key`` it targets a running server instead (its rate
limit must allow the load). Only loopback addresses are accepted.

    python benchmarks/load_status.py --clients 50 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from urllib.parse import urlparse

import httpx
import numpy as np

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of measured load (default 30)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first (default 2)")
    p.add_argument("--url", help="base URL of a running server (loopback only), e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key", help="API key for --url")
    p.add_argument("--database-url", help="database for the started server (default: a fresh PostgreSQL one)")
    p.add_argument("--goal-ms", type=float, default=100.0, help="p99 latency goal in ms (default 100)")
    p.add_argument("--compare", action="store_true",
                   help="first poll GET /datasets/{id} the same way (a route of the same shape, one row by id, "
                        "served the old way: a sync route with a request session), then print the p99 ratio")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="load client: raw keep-alive HTTP/1.1 over asyncio streams (default; light on the CPU "
                        "that it shares with the server), or httpx")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 1000 or not 0 < args.duration <= 600:
        p.error("--clients must be 1..1000 and --duration 0..600 s")
    if args.url and (urlparse(args.url).hostname not in LOOPBACK or not args.api_key):
        p.error("--url must be a loopback address and needs --api-key")
    return args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``), or None where unavailable."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def started_server(database_url: str, data_dir: str):
    """Run the API alone on a free loopback port; yield ``(base_url, key, pid)``.

    The schema is created and the key issued as ``auditor keys create`` does; the server is
    uvicorn with ``api.main:create_app`` as ``auditor serve --no-workers --no-access-log``
    runs it, with a per-key rate limit far above what the load asks.
    """
    from api.serve import issue_key
    from api.settings import Settings

    key = issue_key(Settings(database_url=database_url), "load-test")
    port = _free_port()
    env = {**os.environ, "AUDITOR_DATABASE_URL": database_url, "AUDITOR_DATA_DIR": data_dir,
           "AUDITOR_RATE_LIMIT_PER_SECOND": "1000000", "AUDITOR_RATE_LIMIT_BURST": "1000000"}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host",
                                "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                               env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API server exited with {process.returncode}")
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not come up within 60 s")
            time.sleep(0.2)
        yield base, key, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_audit(base: str, key: str) -> tuple[str, str]:
    """Upload a small dataset and queue an audit of it; return ``(audit_id, dataset_id)``."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(18, 6)), y=rng.normal(size=18))
    with httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        upload = c.post("/datasets", files={"file": ("load.npz", buffer.getvalue())})
        upload.raise_for_status()
        audit = c.post("/audits", json={"dataset_id": upload.json()["id"]})
        audit.raise_for_status()
        return audit.json()["id"], upload.json()["id"]


async def run_load(url: str, key: str, *, clients: int, duration: float, warmup: float,
                   client: str = "raw") -> dict:
    """Poll ``url`` from ``clients`` concurrent loops; latencies count after ``warmup`` seconds.

    ``client`` "raw" sends each loop's requests over one keep-alive HTTP/1.1 connection with
    asyncio streams (about a tenth of httpx's CPU per request, which matters where the load
    client shares two cores with the server); "httpx" uses one ``httpx.AsyncClient`` a loop.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    def record(sent: float, failure: str | None) -> None:
        if sent >= measure_from:
            latencies.append(time.perf_counter() - sent)
            if failure:
                errors[failure] = errors.get(failure, 0) + 1

    loop = _raw_loop if client == "raw" else _httpx_loop
    await asyncio.gather(*(loop(url, key, stop_at, record) for _ in range(clients)))
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "client": client, "duration_s": duration, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / duration, 1), "errors": sum(errors.values()),
            "error_kinds": errors, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


async def _httpx_loop(url: str, key: str, stop_at: float, record) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                 limits=httpx.Limits(max_connections=1)) as client:
        while (sent := time.perf_counter()) < stop_at:
            try:
                response = await client.get(url)
                record(sent, None if response.status_code == 200 else f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                record(sent, type(exc).__name__)


async def _raw_loop(url: str, key: str, stop_at: float, record) -> None:
    """GET ``url`` over one keep-alive connection (reopened if the server closes it); the
    responses must carry a Content-Length, as this API's do."""
    parts = urlparse(url)
    request = (f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {key}\r\n\r\n").encode()
    writer = None
    try:
        while (sent := time.perf_counter()) < stop_at:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                writer.write(request)
                status = int((await reader.readline()).split(b" ", 2)[1])
                length, close = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                await reader.readexactly(length)
                record(sent, None if status == 200 else f"HTTP {status}")
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                record(sent, type(exc).__name__)
                close = True
            if close and writer is not None:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def measure(url: str, key: str, args: argparse.Namespace, server_pid: int | None) -> dict:
    """One load run against ``url``, with the CPU seconds of the load client and the server."""
    server_cpu = process_cpu_seconds(server_pid) if server_pid else None
    client_cpu = time.process_time()
    result = asyncio.run(run_load(url, key, clients=args.clients, duration=args.duration, warmup=args.warmup,
                                  client=args.client))
    result["client_cpu_s"] = round(time.process_time() - client_cpu, 1)
    if server_cpu is not None:
        result["server_cpu_s"] = round(process_cpu_seconds(server_pid) - server_cpu, 1)
    return result


def add_ratios(result: dict, *, goal_ms: float, warmup: float) -> None:
    """Add p99 over the goal and CPU milliseconds per request (CPU counted over warm-up too)."""
    result["goal_ms"] = goal_ms
    result["p99_over_goal"] = round(result["p99_ms"] / goal_ms, 2)
    served = max(result["requests_per_s"] * (result["duration_s"] + warmup), 1.0)
    result["client_cpu_ms_per_request"] = round(1000 * result["client_cpu_s"] / served, 2)
    if "server_cpu_s" in result:
        result["server_cpu_ms_per_request"] = round(1000 * result["server_cpu_s"] / served, 2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_pid = None
    with ExitStack() as stack:
        if args.url:
            base, key = args.url.rstrip("/"), args.api_key
        else:
            import tempfile

            from store.scratch import scratch_postgres

            database_url = args.database_url or stack.enter_context(scratch_postgres(prefix="auditor_load"))
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="auditor-load-"))
            base, key, server_pid = stack.enter_context(started_server(database_url, data_dir))
        audit_id, dataset_id = create_audit(base, key)
        reference = None
        if args.compare:
            reference = measure(f"{base}/api/v1/datasets/{dataset_id}", key, args, server_pid)
        result = measure(f"{base}/api/v1/audits/{audit_id}", key, args, server_pid)
    add_ratios(result, goal_ms=args.goal_ms, warmup=args.warmup)
    if reference is not None:
        add_ratios(reference, goal_ms=args.goal_ms, warmup=args.warmup)
        result["reference_sync_route"] = reference
        result["p99_ratio_status_over_sync_route"] = round(result["p99_ms"] / max(reference["p99_ms"], 1e-9), 2)
    if args.json:
        print(json.dumps(result))
        return 0 if result["errors"] == 0 else 1
    if reference is not None:
        print(f"reference, GET /datasets/{{id}} (sync route, request session): p50 {reference['p50_ms']} ms, "
              f"p99 {reference['p99_ms']} ms, {reference['requests_per_s']}/s; CPU ms per request: server "
              f"{reference.get('server_cpu_ms_per_request', 'n/a')}, load client "
              f"{reference['client_cpu_ms_per_request']}")
        print(f"status route p99 / reference p99: {result['p99_ratio_status_over_sync_route']}")
    print(f"{result['clients']} clients x {result['duration_s']:g} s: {result['requests']} requests "
          f"({result['requests_per_s']}/s), {result['errors']} errors; latency p50 {result['p50_ms']} ms, "
          f"p99 {result['p99_ms']} ms (goal {args.goal_ms:g} ms: p99/goal {result['p99_over_goal']}), "
          f"max {result['max_ms']} ms; CPU ms per request: server {result.get('server_cpu_ms_per_request', 'n/a')}"
          f", load client {result['client_cpu_ms_per_request']} (on {os.cpu_count()} CPUs)")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
