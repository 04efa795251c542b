"""``serve``, ``worker`` and ``keys``: the service side. Its handlers import ``api`` and
``workers`` when they run; without the server dependencies they say what to install."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from auditor.cli.common import (
    EXIT_CLEAN,
    CLIError,
    add_database_flag,
    add_log_file_flag,
    add_worker_flags,
    invalid,
    server_stack,
)

SERVE_LOG = Path("logs") / "serve.log"


def add_commands(commands) -> None:
    p = commands.add_parser("serve", help="run the HTTP API and, unless --no-workers, a dispatcher on Ray that "
                                          "runs the audits",
                            description="Run the HTTP API under /api/v1 and, unless --no-workers, a dispatcher "
                                        "on Ray. Creates or upgrades the database schema first. Logs go to "
                                        "DATA_DIR/logs/serve.log unless --log-file says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="default 8000")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where uploaded datasets (and the log) are kept (default: $AUDITOR_DATA_DIR or ./auditor-data)")
    p.add_argument("--max-upload-bytes", type=int, metavar="N", help="largest accepted dataset file (default 64 MiB)")
    add_worker_flags(p)
    p.add_argument("--no-workers", action="store_true",
                   help="run the API alone; submitted audits wait for an `auditor worker`")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    add_log_file_flag(p, "DATA_DIR/logs/serve.log")
    p.set_defaults(handler=run_serve)

    p = commands.add_parser("worker", help="run a dispatcher that claims queued audits and runs them on Ray")
    add_worker_flags(p)
    add_log_file_flag(p, "stderr")
    p.set_defaults(handler=run_worker)

    p = commands.add_parser("keys", help="API keys: create, revoke")
    sub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create an API key for a tenant; the key is printed once, on the last line")
    c.add_argument("--tenant", required=True, help="tenant name (created if new)")
    add_database_flag(c)
    c.set_defaults(handler=run_keys_create)
    r = sub.add_parser("revoke", help="revoke an API key: requests with it are refused from then on")
    r.add_argument("key_id", metavar="KEY_ID",
                   help="the key's id: the 16 hex digits after aud_ (a whole key works too)")
    add_database_flag(r)
    r.set_defaults(handler=run_keys_revoke)


def _settings(args, command: str, **extra):
    """The service settings: environment, then the flags (one line per invalid value)."""
    import pydantic

    with server_stack(command):
        from api.serve import load_settings

    try:
        return load_settings(database_url=args.database_url, **extra)
    except pydantic.ValidationError as exc:
        raise CLIError(invalid(exc)) from None


def _worker_settings(args, command: str, **extra):
    return _settings(args, command, ray_address=args.ray_address, max_running_audits=args.max_running_audits,
                     retrainers=args.retrainers, retrainer_gpus=args.retrainer_gpus,
                     heartbeat_seconds=args.heartbeat_seconds, stale_after_seconds=args.stale_after_seconds, **extra)


def run_serve(args) -> int:
    settings = _worker_settings(args, "serve", data_dir=args.data_dir, max_upload_bytes=args.max_upload_bytes)
    with server_stack("serve"):
        from api.serve import serve
        if not args.no_workers:
            import workers.service  # noqa: F401  (fails here, not after the API started, without ray)
    log_file = args.log_file or str(settings.data_dir / SERVE_LOG)
    _start_logging(log_file, command="serve")
    serve(settings, host=args.host, port=args.port, access_log=not args.no_access_log, workers=not args.no_workers)
    return EXIT_CLEAN


def run_worker(args) -> int:
    settings = _worker_settings(args, "worker")
    with server_stack("worker"):
        from api.serve import run_worker as run
        import workers.service  # noqa: F401
    _start_logging(args.log_file or "-", command="worker")
    run(settings)
    return EXIT_CLEAN


def _start_logging(target: str, *, command: str) -> None:
    """Log to stderr (``-``), or send this process's stdout and stderr, logs of Ray and the
    web server included, to the file ``target`` after one line on stderr saying where."""
    import logging

    if target != "-":
        path = Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise CLIError(f"cannot write the log file {path}: {exc.strerror}") from None
        print(f"auditor {command}: logging to {path} "
              f"(--log-file - logs to stderr)", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_keys_create(args) -> int:
    tenant = args.tenant.strip()
    if not tenant or len(tenant) > 200:
        raise CLIError("--tenant must be 1 to 200 characters")
    settings = _settings(args, "keys create")
    with server_stack("keys create"):
        from api.serve import issue_key

    key = issue_key(settings, tenant)
    print(f"API key for tenant {tenant!r} (shown once; only its hash is stored):")
    print(key)
    return EXIT_CLEAN


def run_keys_revoke(args) -> int:
    key_id = args.key_id.removeprefix("aud_").split("_")[0]       # a whole key names its id too
    settings = _settings(args, "keys revoke")
    with server_stack("keys revoke"):
        from api.serve import revoke_key

    if not revoke_key(settings, key_id):
        raise CLIError(f"no API key {key_id!r} to revoke")
    print(f"API key {key_id} revoked")
    return EXIT_CLEAN
