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
    _add_demo(commands)
    _add_make_benchmark(commands)
    _add_audit(commands)
    _add_reproduce(commands)
    _add_bench(commands)
    _add_serve(commands)
    _add_keys(commands)
    return parser


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="build a poisoned benchmark, audit it, print the verdict, write a report")
    p.add_argument("--out-dir", default="auditor-demo", help="where the data set and reports go")
    p.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from pathlib import Path

    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = BenchmarkSpec(kind="decoys", n=200, poison_fraction=0.05, length=6, seed=7)
    data = out / "poisoned.npz"
    save_dataset(data, **make_benchmark(spec))
    print(f"built {data}: {spec.n} sequences of length {spec.length}, {round(spec.poison_fraction * spec.n)} "
          f"clean-label poisons and {round(spec.decoy_fraction * spec.n)} harmless outliers (ground truth kept "
          f"for scoring only)")
    return _audit_file(str(data), strategy="auto", budget=None, seed=0, confirm_seeds=6, device="cpu",
                       as_json=False, json_path=out / "report.json", html_path=out / "report.html")


def _add_make_benchmark(commands) -> None:
    p = commands.add_parser("make-benchmark", help="write a poisoned data set with ground truth")
    p.add_argument("--kind", choices=("standalone", "network", "decoys", "clean"), required=True)
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=200, help="training examples")
    p.add_argument("--poison-fraction", type=float, default=0.05)
    p.add_argument("--length", type=int, default=6, help="training sequence length k")
    p.add_argument("--poison-positions", default="2",
                   help="comma-separated positions counted from the end (2 = k-1) that carry a poison's energy")
    p.set_defaults(handler=_run_make_benchmark)


def _run_make_benchmark(args) -> int:
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    try:
        positions = tuple(int(p) for p in args.poison_positions.split(","))
        spec = BenchmarkSpec(kind=args.kind, n=args.n, poison_fraction=args.poison_fraction, length=args.length,
                             poison_positions=positions, seed=args.seed)
        arrays = make_benchmark(spec)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    digest = save_dataset(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['x'])} examples, {int(arrays['is_poison'].sum())} poisons, "
          f"sha256 {digest}")
    return 0


def _add_audit(commands) -> None:
    p = commands.add_parser("audit", help="audit a data set (.npz) for clean-label poisons")
    p.add_argument("file")
    p.add_argument("--strategy", choices=("auto", "group", "loo", "banzhaf"), default="auto")
    p.add_argument("--budget", type=int, default=None, help="most models to train in the search")
    p.add_argument("--executor", choices=("inline",), default="inline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confirm-seeds", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--html", help="write the HTML report here")
    p.set_defaults(handler=_run_audit)


def _run_audit(args) -> int:
    return _audit_file(args.file, strategy=args.strategy, budget=args.budget, seed=args.seed,
                       confirm_seeds=args.confirm_seeds, device=args.device, as_json=args.json,
                       json_path=args.out, html_path=args.html)


def _audit_file(path: str, *, strategy, budget, seed, confirm_seeds, device, as_json, json_path, html_path) -> int:
    import pydantic
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from auditor.audit import run_audit
    from auditor.config import AuditConfig
    from auditor.data import load_dataset
    from auditor.render import print_json
    from auditor.report import build_report, write_report

    dataset = load_dataset(path)
    try:
        config = AuditConfig(strategy=strategy, budget=budget, seed=seed, confirm_seeds=confirm_seeds, device=device)
    except pydantic.ValidationError as exc:
        raise CLIError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    if device == "cpu":
        torch.set_num_threads(1)            # tiny models: one thread is as fast, and leaves a core free
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("screening", total=1)

        def progress(done: int, total: int, phase: str) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        try:
            result = run_audit(dataset, config, progress=progress)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    report = build_report(result, dataset, config)
    write_report(report, json_path=json_path, html_path=html_path)
    if as_json:
        print_json(report)
        return 0
    print(report["status_line"])
    if report["flagged"]:
        print(f"flagged: {report['flagged']}")
    evaluation = report.get("evaluation")
    if evaluation:
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"against ground truth: precision {fmt(evaluation['precision'])}, recall {fmt(evaluation['recall'])}, "
              f"AUROC {fmt(evaluation['auroc'])}")
    for label, target in (("JSON report", json_path), ("HTML report", html_path)):
        if target:
            print(f"{label}: {target}")
    return 0


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
    d = sub.add_parser("detect", help="precision/recall of the audit and the baselines over a benchmark suite")
    d.add_argument("--quick", action="store_true", help="a 4-set subset instead of the 16-set suite")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=_run_bench_detect)


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


def _run_bench_detect(args) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from auditor.render import print_json
    from auditor.suite import default_suite, quick_suite, run_suite, summarize

    torch.set_num_threads(1)
    specs = quick_suite() if args.quick else default_suite()
    console = Console(stderr=True)

    def on_row(row: dict) -> None:
        if not args.json:
            d = row["detector"]
            console.print(f"  {row['kind']:<10} n={row['n']:<5} L={row['length']} poisons={row['poisons']:<3} "
                          f"flagged={row['flagged']:<3} P={_fmt(d['precision'])} R={_fmt(d['recall'])} "
                          f"trials={d['trials']} {d['seconds']:.0f}s")

    rows = run_suite(specs, on_row=on_row)
    summary = summarize(rows)
    if args.json:
        print_json({"rows": rows, "summary": summary})
        return 0
    table = Table(title="detection over the suite (poisoned sets; baselines flag their top k)")
    for col in ("data set", "audit P", "audit R", "audit AUROC", "trials", "s",
                *[f"{b} AUROC" for b in rows[0]["baselines"]]):
        table.add_column(col, justify="right")
    for r in rows:
        d = r["detector"]
        table.add_row(f"{r['kind']} n={r['n']} L={r['length']} p={r['poisons']}", _fmt(d["precision"]),
                      _fmt(d["recall"]), _fmt(d["auroc"]), str(d["trials"]), f"{d['seconds']:.0f}",
                      *[_fmt(b["auroc"]) for b in r["baselines"].values()])
    Console().print(table)
    print(f"mean over poisoned sets: precision {_fmt(summary['precision'])}, recall {_fmt(summary['recall'])}, "
          f"AUROC {_fmt(summary['auroc'])}; clean sets without flags: {_fmt(summary['clean_without_flags'])}; "
          f"error after removal within 1.5x of clean-only: {_fmt(summary['within_1_5x_of_clean'])}")
    print("baselines (mean AUROC, P@k): " + ", ".join(
        f"{k} {_fmt(v['auroc'])}/{_fmt(v['precision_at_k'])}" for k, v in summary["baselines"].items()))
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


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
