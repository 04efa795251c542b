"""Load test: many concurrent clients polling one audit's status.

By default this starts ``auditor serve --no-workers`` on a fresh PostgreSQL database (on
``AUDITOR_TEST_POSTGRES_URL`` or the local server), creates a key, a dataset and an audit,
then runs ``--clients`` concurrent clients (asyncio + httpx) for ``--duration`` seconds, each
reading ``GET /api/v1/audits/{id}`` in a loop. It prints the p50/p99/max latency, the
request count and the error count. With ``--url`` and ``--api-key`` it targets a running
server instead. Only loopback addresses are accepted.

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


def _cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                            timeout=120, check=True)
    return result.stdout


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``), or None where unavailable."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def started_server(database_url: str, data_dir: str):
    """Run ``auditor serve --no-workers`` on a free loopback port; yield ``(base_url, key, pid)``."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "auditor.cli", "serve", "--no-workers", "--no-access-log",
                                "--host", "127.0.0.1", "--port", str(port), "--database-url", database_url,
                                "--data-dir", data_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"auditor serve exited with {process.returncode}")
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("auditor serve did not come up within 60 s")
            time.sleep(0.2)
        key = _cli("keys", "create", "--tenant", "load-test", "--database-url", database_url).splitlines()[-1]
        yield base, key, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_audit(base: str, key: str) -> str:
    """Upload a small dataset and queue an audit of it; return the audit id."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(18, 6)), y=rng.normal(size=18))
    with httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        upload = c.post("/datasets", files={"file": ("load.npz", buffer.getvalue())})
        upload.raise_for_status()
        audit = c.post("/audits", json={"dataset_id": upload.json()["id"]})
        audit.raise_for_status()
        return audit.json()["id"]


async def run_load(url: str, key: str, *, clients: int, duration: float, warmup: float) -> dict:
    """Poll ``url`` from ``clients`` concurrent loops; latencies count after ``warmup`` seconds."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration

    async def client_loop() -> None:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                     limits=httpx.Limits(max_connections=1)) as client:
            await poll(client)

    async def poll(client: httpx.AsyncClient) -> None:
        while (sent := time.perf_counter()) < stop_at:
            try:
                response = await client.get(url)
                failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                failure = type(exc).__name__
            done = time.perf_counter()
            if sent >= measure_from:
                latencies.append(done - sent)
                if failure:
                    errors[failure] = errors.get(failure, 0) + 1

    await asyncio.gather(*(client_loop() for _ in range(clients)))
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {"clients": clients, "duration_s": duration, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / duration, 1), "errors": sum(errors.values()),
            "error_kinds": errors, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


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
        audit_id = create_audit(base, key)
        server_cpu = process_cpu_seconds(server_pid) if server_pid else None
        client_cpu = time.process_time()
        result = asyncio.run(run_load(f"{base}/api/v1/audits/{audit_id}", key, clients=args.clients,
                                      duration=args.duration, warmup=args.warmup))
        result["client_cpu_s"] = round(time.process_time() - client_cpu, 1)
        if server_cpu is not None:
            result["server_cpu_s"] = round(process_cpu_seconds(server_pid) - server_cpu, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['clients']} clients x {result['duration_s']:g} s: {result['requests']} requests "
              f"({result['requests_per_s']}/s), {result['errors']} errors; latency p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; CPU seconds: load client "
              f"{result['client_cpu_s']}, server {result.get('server_cpu_s', 'n/a')} (on {os.cpu_count()} CPUs)")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
