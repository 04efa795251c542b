"""The ``auditor`` command line.

Each sub-command's handler imports what it needs when it runs, so ``auditor --help`` and the
science commands start without loading the web or database stacks.
"""

from __future__ import annotations

import argparse
import sys

from auditor.data import DatasetError


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (DatasetError, CLIError) as exc:
        print(f"auditor: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                      # e.g. `auditor ... --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditor", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_reproduce(commands)
    _add_bench(commands)
    _add_serve(commands)
    _add_keys(commands)
    return parser


def _add_reproduce(commands) -> None:
    p = commands.add_parser("reproduce", help="reproduce the paper's clean vs poisoned numbers")
    p.add_argument("--setting", choices=("theory", "standalone", "network"), required=True)
    p.add_argument("--length", type=int, required=True, help="training sequence length k")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_run_reproduce)


def _run_reproduce(args) -> int:
    from auditor.paper import get_setting, reproduce
    from auditor.render import print_json, print_reproduction

    try:
        get_setting(args.setting, args.length)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    result = reproduce(setting=args.setting, length=args.length, device=args.device)
    if args.json:
        print_json(result)
    else:
        print_reproduction(result)
    return 0


def _add_bench(commands) -> None:
    p = commands.add_parser("bench", help="performance benchmarks")
    sub = p.add_subparsers(title="benchmarks", metavar="BENCHMARK", required=True)
    t = sub.add_parser("train", help="models/s of the batched trainer (setting B, L=6)")
    t.add_argument("--models", type=int, default=2048)
    t.add_argument("--epochs", type=int, default=3000, help="fixed number of GD steps")
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    t.add_argument("--json", action="store_true")
    t.set_defaults(handler=_run_bench_train)


def _run_bench_train(args) -> int:
    from auditor.bench import bench_train
    from auditor.render import print_json

    result = bench_train(models=args.models, epochs=args.epochs, device=args.device, dtype=args.dtype)
    if args.json:
        print_json(result)
    else:
        print(f"{result['models']} models x {result['epochs']} steps in {result['seconds']:.2f} s: "
              f"{result['models_per_second']:.1f} models/s on {result['device']}")
    return 0


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="run the HTTP API (creates or upgrades the database schema first)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--database-url", help="SQLAlchemy URL (default: $AUDITOR_DATABASE_URL, else SQLite in "
                                          "./auditor-data)")
    p.add_argument("--data-dir", help="where uploaded datasets are kept (default: $AUDITOR_DATA_DIR or "
                                      "./auditor-data)")
    p.add_argument("--max-upload-bytes", type=int, help="largest accepted dataset file (default 64 MiB)")
    p.add_argument("--no-workers", action="store_true", help="run the API alone; submitted audits stay queued")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    if not args.no_workers:
        print("auditor: error: the audit workers are not available yet; pass --no-workers to run the API alone "
              "(submitted audits stay queued)", file=sys.stderr)
        return 2
    from api.serve import load_settings, serve

    settings = load_settings(database_url=args.database_url, data_dir=args.data_dir,
                             max_upload_bytes=args.max_upload_bytes)
    serve(settings, host=args.host, port=args.port, access_log=not args.no_access_log)
    return 0


def _add_keys(commands) -> None:
    p = commands.add_parser("keys", help="API keys")
    sub = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="create an API key for a tenant; the key is printed once, on the last line")
    c.add_argument("--tenant", required=True, help="tenant name (created if new)")
    c.add_argument("--database-url", help="SQLAlchemy URL (default: $AUDITOR_DATABASE_URL, else SQLite in "
                                          "./auditor-data)")
    c.set_defaults(handler=_run_keys_create)


def _run_keys_create(args) -> int:
    tenant = args.tenant.strip()
    if not tenant or len(tenant) > 200:
        print("auditor: error: --tenant must be 1 to 200 characters", file=sys.stderr)
        return 2
    from api.serve import issue_key, load_settings

    key = issue_key(load_settings(database_url=args.database_url), tenant)
    print(f"API key for tenant {tenant!r} (shown once; only its hash is stored):")
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
