"""The ``auditor`` command line.

Each sub-command's handler imports what it needs when it runs, so ``auditor --help`` and the
science commands start without loading the web or database stacks.
"""

from __future__ import annotations

import argparse
import sys

from auditor.data import DatasetError

# the values of auditor.config.Strategy and ModelKind and the default of confirm_seeds, spelled
# out so that building the parser does not import pydantic (tests/auditor/test_cli.py holds them equal)
STRATEGY_CHOICES = ("auto", "group", "core", "loo", "banzhaf")
MODEL_CHOICES = ("ssm", "network")
CONFIRM_SEEDS = 8
MODEL_HELP = ("the student every trial trains on a regression set: the standalone SSM (setting B), or "
              "network, the SSM followed by a ReLU MLP (setting C); classification sets train the deep "
              "S4D classifier")


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
    _add_worker(commands)
    _add_client_commands(commands)
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
    return _audit_file(str(data), strategy="auto", budget=None, seed=0, confirm_seeds=CONFIRM_SEEDS, device="cpu",
                       as_json=False, json_path=out / "report.json", html_path=out / "report.html")


def _add_make_benchmark(commands) -> None:
    p = commands.add_parser("make-benchmark", help="write a poisoned data set with ground truth")
    p.add_argument("--kind", choices=("standalone", "network", "decoys", "clean", "digits"), required=True,
                   help="digits: scikit-learn's 8x8 digits as 64-step pixel sequences with crafted poisons")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None, help="training examples (default 200; digits 600)")
    p.add_argument("--poison-fraction", type=float, default=0.05)
    p.add_argument("--length", type=int, default=6, help="training sequence length k")
    p.add_argument("--poison-positions", default="2",
                   help="comma-separated positions counted from the end (2 = k-1) that carry a poison's energy")
    p.set_defaults(handler=_run_make_benchmark)


def _run_make_benchmark(args) -> int:
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    if args.kind == "digits":
        return _make_digits(args)
    try:
        positions = tuple(int(p) for p in args.poison_positions.split(","))
        spec = BenchmarkSpec(kind=args.kind, n=args.n or 200, poison_fraction=args.poison_fraction, length=args.length,
                             poison_positions=positions, seed=args.seed)
        arrays = make_benchmark(spec)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    digest = save_dataset(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['x'])} examples, {int(arrays['is_poison'].sum())} poisons, "
          f"sha256 {digest}")
    return 0


def _make_digits(args) -> int:
    import torch

    from auditor.data import save_dataset
    from auditor.digits import digits_attack, make_digits_benchmark

    torch.set_num_threads(1)
    n = args.n or 600
    if not 10 <= n <= 1100 or not 0 < args.poison_fraction <= 0.5:
        raise CLIError("digits needs --n in [10, 1100] and --poison-fraction in (0, 0.5]")
    arrays = make_digits_benchmark(seed=args.seed, n_train=n, n_trusted=min(300, 1797 - n - 300),
                                   attack=digits_attack(fraction=args.poison_fraction))
    digest = save_dataset(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['x'])} digit sequences of length 64, {int(arrays['is_poison'].sum())} "
          f"poisons, {len(arrays['x_val'])} reference sequence(s) (the attacked ones), sha256 {digest}")
    return 0


def _add_audit(commands) -> None:
    p = commands.add_parser("audit", help="audit a data set (.npz) for clean-label poisons")
    p.add_argument("file")
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto")
    p.add_argument("--budget", type=int, default=None, help="most models to train in the search")
    p.add_argument("--model", choices=MODEL_CHOICES, default="ssm", help=MODEL_HELP)
    p.add_argument("--executor", choices=("inline", "ray"), default="inline",
                   help="where trials train: this process, or retrainer actors on a Ray cluster")
    p.add_argument("--ray-address", help="Ray cluster to use with --executor ray (default: start a local one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--confirm-seeds", type=int, default=CONFIRM_SEEDS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--html", help="write the HTML report here")
    p.set_defaults(handler=_run_audit)


def _run_audit(args) -> int:
    if args.ray_address and args.executor != "ray":
        raise CLIError("--ray-address needs --executor ray")
    return _audit_file(args.file, strategy=args.strategy, budget=args.budget, seed=args.seed,
                       confirm_seeds=args.confirm_seeds, model=args.model, device=args.device, as_json=args.json,
                       json_path=args.out, html_path=args.html, executor=args.executor,
                       ray_address=args.ray_address)


def _audit_file(path: str, *, strategy, budget, seed, confirm_seeds, device, as_json, json_path, html_path,
                model: str = "ssm", executor: str = "inline", ray_address: str | None = None) -> int:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from auditor.audit import build_problem, run_audit
    from auditor.data import load_dataset
    from auditor.render import print_json
    from auditor.report import build_report, write_report

    dataset = load_dataset(path)
    config = _audit_config(strategy=strategy, budget=budget, seed=seed, confirm_seeds=confirm_seeds, model=model,
                           device=device)
    if device == "cpu":
        torch.set_num_threads(1)            # tiny models: one thread is as fast, and leaves a core free
    runner = None
    if executor == "ray":
        from workers.executor import RayExecutor
        from workers.pool import RetrainerPool
        from workers.service import connect

        try:
            problem = build_problem(dataset, config)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        connect(ray_address)
        runner = RayExecutor(problem, RetrainerPool())
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("screening", total=1)

        def progress(done: int, total: int, phase: str) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        try:
            result = run_audit(dataset, config, executor=runner, progress=progress)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    report = build_report(result, dataset, config)
    write_report(report, json_path=json_path, html_path=html_path)
    if as_json:
        print_json(report)
    else:
        _print_report(report, json_path=json_path, html_path=html_path)
    return 0


def _audit_config(**fields):
    """An :class:`AuditConfig`, or one line saying which field is wrong."""
    import pydantic

    from auditor.config import AuditConfig

    try:
        return AuditConfig(**fields)
    except pydantic.ValidationError as exc:
        raise CLIError(_invalid(exc)) from None


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
    d.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto",
                   help="the audit's strategy (the baselines do not depend on it)")
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

    from auditor.config import AuditConfig

    rows = run_suite(specs, config=AuditConfig(strategy=args.strategy), on_row=on_row)
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


def _invalid(exc) -> str:
    """A pydantic validation error as one line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="run the HTTP API and, unless --no-workers, a dispatcher on Ray that "
                                          "runs the audits")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--database-url", help="SQLAlchemy URL (default: $AUDITOR_DATABASE_URL, else SQLite in "
                                          "./auditor-data)")
    p.add_argument("--data-dir", help="where uploaded datasets are kept (default: $AUDITOR_DATA_DIR or "
                                      "./auditor-data)")
    p.add_argument("--max-upload-bytes", type=int, help="largest accepted dataset file (default 64 MiB)")
    _add_worker_flags(p)
    p.add_argument("--no-workers", action="store_true",
                   help="run the API alone; submitted audits wait for an `auditor worker`")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from api.serve import serve

    settings = _worker_settings(args, data_dir=args.data_dir, max_upload_bytes=args.max_upload_bytes)
    _log_to_stderr()
    serve(settings, host=args.host, port=args.port, access_log=not args.no_access_log, workers=not args.no_workers)
    return 0


def _add_worker_flags(p) -> None:
    p.add_argument("--ray-address", help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: "
                                         "$AUDITOR_RAY_ADDRESS, else start a local one)")
    p.add_argument("--max-running-audits", type=int, help="audits run at once (default 2)")
    p.add_argument("--retrainers", type=int, help="retrainer actors (default: one per GPU, else one per CPU)")
    p.add_argument("--retrainer-gpus", type=float, help="GPUs per retrainer actor (default 0: CPU actors)")
    p.add_argument("--heartbeat-seconds", type=float, help="how often a running audit reports alive (default 2)")
    p.add_argument("--stale-after-seconds", type=float,
                   help="requeue running audits whose worker was silent this long (default 30)")


def _worker_settings(args, **extra):
    import pydantic

    from api.serve import load_settings

    try:
        return load_settings(database_url=args.database_url, ray_address=args.ray_address,
                             max_running_audits=args.max_running_audits, retrainers=args.retrainers,
                             retrainer_gpus=args.retrainer_gpus, heartbeat_seconds=args.heartbeat_seconds,
                             stale_after_seconds=args.stale_after_seconds, **extra)
    except pydantic.ValidationError as exc:
        raise CLIError(_invalid(exc)) from None


def _log_to_stderr() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _add_worker(commands) -> None:
    p = commands.add_parser("worker", help="run a dispatcher that claims queued audits and runs them on Ray")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: $AUDITOR_DATABASE_URL, else SQLite in "
                                          "./auditor-data)")
    _add_worker_flags(p)
    p.set_defaults(handler=_run_worker)


def _run_worker(args) -> int:
    from api.serve import run_worker

    settings = _worker_settings(args)
    _log_to_stderr()
    run_worker(settings)
    return 0


def _add_client_commands(commands) -> None:
    def client_flags(p) -> None:
        p.add_argument("--server", help="API base URL (default: $AUDITOR_SERVER, else http://127.0.0.1:8000)")
        p.add_argument("--api-key", help="API key (default: $AUDITOR_API_KEY)")

    def audit_flags(p) -> None:
        p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto")
        p.add_argument("--budget", type=int, default=None, help="most models to train in the search")
        p.add_argument("--model", choices=MODEL_CHOICES, default="ssm", help=MODEL_HELP)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--confirm-seeds", type=int, default=CONFIRM_SEEDS)

    p = commands.add_parser("submit", help="upload a data set to a running server and queue an audit of it")
    p.add_argument("file")
    audit_flags(p)
    p.add_argument("--wait", action="store_true", help="follow the audit with a progress bar until it ends")
    p.add_argument("--json", action="store_true", help="print the audit (or, with --wait, the report) as JSON")
    client_flags(p)
    p.set_defaults(handler=_run_submit)

    p = commands.add_parser("status", help="an audit's status and progress on a running server")
    p.add_argument("audit_id")
    p.add_argument("--wait", action="store_true", help="follow it with a progress bar until it ends")
    p.add_argument("--json", action="store_true")
    client_flags(p)
    p.set_defaults(handler=_run_status)

    p = commands.add_parser("report", help="fetch the report of a finished audit from a running server")
    p.add_argument("audit_id")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--html", help="write the HTML report here")
    client_flags(p)
    p.set_defaults(handler=_run_report)

    p = commands.add_parser("cancel", help="cancel a queued or running audit on a running server")
    p.add_argument("audit_id")
    client_flags(p)
    p.set_defaults(handler=_run_cancel)

    p = commands.add_parser("scan", help="upload many data sets and audit them all in one scan")
    p.add_argument("files", nargs="+")
    audit_flags(p)
    p.add_argument("--wait", action="store_true", help="follow the scan with a progress bar until it ends")
    p.add_argument("--json", action="store_true")
    client_flags(p)
    p.set_defaults(handler=_run_scan)


def _client(args):
    from api.client import Client, ClientError

    try:
        return Client(args.server, args.api_key)
    except ClientError as exc:
        raise CLIError(str(exc)) from None


def _client_call(fn, *args, **kwargs):
    from api.client import ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        raise CLIError(str(exc)) from None


def _audit_settings(args) -> dict:
    config = _audit_config(strategy=args.strategy, budget=args.budget, seed=args.seed,
                           confirm_seeds=args.confirm_seeds, model=args.model)
    return config.model_dump(mode="json", exclude_defaults=True)


def _follow(client, fetch, *, label: str, quiet: bool) -> dict:
    """Poll ``fetch`` with a progress bar until the audit or scan has ended; return its last state."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from api.client import FINISHED

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True, disable=quiet) as bar:
        task = bar.add_task(label, total=1.0)

        def update(state: dict) -> None:
            stage = state.get("stage") or state["status"]
            bar.update(task, completed=state.get("progress", 0.0), description=f"{label}: {stage}")

        return _client_call(client.wait, fetch, on_update=update,
                            done=lambda state: state["status"] in (*FINISHED, "finished"))


def _print_report(report: dict, *, json_path=None, html_path=None) -> None:
    """The verdict in a few lines, and where the report files were written."""
    print(report.get("status_line", ""))
    if report.get("flagged"):
        print(f"flagged: {report['flagged']}")
    evaluation = report.get("evaluation")
    if evaluation:
        print(f"against ground truth: precision {_fmt(evaluation.get('precision'))}, "
              f"recall {_fmt(evaluation.get('recall'))}, AUROC {_fmt(evaluation.get('auroc'))}")
    for label, target in (("JSON report", json_path), ("HTML report", html_path)):
        if target:
            print(f"{label}: {target}")


def _audit_line(audit: dict) -> str:
    line = f"audit {audit['id']}: {audit['status']}, {audit['progress']:.0%}, {audit['trials_done']} trials"
    if audit.get("stage") and audit["status"] == "running":
        line += f" ({audit['stage']})"
    if audit.get("error"):
        line += f": {audit['error']}"
    return line


def _run_submit(args) -> int:
    from auditor.render import print_json

    config = _audit_settings(args)
    with _client(args) as client:
        dataset = _client_call(client.upload, args.file)
        audit = _client_call(client.submit, dataset["id"], config)
        if not args.wait:
            if args.json:
                print_json(audit)
            else:
                print(f"dataset {dataset['id']} ({dataset['n']} sequences); audit queued:", file=sys.stderr)
                print(audit["id"])
            return 0
        print(f"audit {audit['id']} queued", file=sys.stderr)
        audit = _follow(client, lambda: client.audit(audit["id"]), label=f"audit {audit['id'][:8]}",
                        quiet=args.json)
        if audit["status"] != "succeeded":
            raise CLIError(_audit_line(audit))
        report = _client_call(client.report, audit["id"])
    if args.json:
        print_json(report)
    else:
        _print_report(report)
        print(audit["id"])
    return 0


def _run_status(args) -> int:
    from auditor.render import print_json

    with _client(args) as client:
        fetch = lambda: client.audit(args.audit_id)  # noqa: E731
        audit = (_follow(client, fetch, label=f"audit {args.audit_id[:8]}", quiet=args.json) if args.wait
                 else _client_call(fetch))
    if args.json:
        print_json(audit)
    else:
        print(_audit_line(audit))
    return 0 if audit["status"] in ("queued", "running", "succeeded") else 1


def _run_report(args) -> int:
    from pathlib import Path

    from auditor.render import print_json
    from auditor.report import write_report

    with _client(args) as client:
        report = _client_call(client.report, args.audit_id)
        if args.html:                                   # the page the server rendered
            Path(args.html).write_text(_client_call(client.report_html, args.audit_id), encoding="utf-8")
    write_report(report, json_path=args.out)
    if args.json:
        print_json(report)
    else:
        _print_report(report, json_path=args.out, html_path=args.html)
    return 0


def _run_cancel(args) -> int:
    with _client(args) as client:
        audit = _client_call(client.cancel, args.audit_id)
    print(_audit_line(audit) + (" (cancel requested)" if audit["status"] == "running" else ""))
    return 0


def _run_scan(args) -> int:
    from auditor.render import print_json

    config = _audit_settings(args)
    with _client(args) as client:
        ids = [_client_call(client.upload, path)["id"] for path in args.files]
        scan = _client_call(client.scan, ids, config)
        if args.wait:
            scan = _follow(client, lambda: client.get_scan(scan["id"]), label=f"scan {scan['id'][:8]}",
                           quiet=args.json)
    if args.json:
        print_json(scan)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(scan["counts"].items()) if v)
    print(f"scan {scan['id']}: {scan['status']}, {len(scan['audits'])} audits ({counts}), "
          f"{scan['flagged_total']} examples flagged")
    for path, audit in zip(args.files, scan["audits"]):
        flagged = "" if audit["flagged"] is None else f", {audit['flagged']} flagged"
        print(f"  {path}: audit {audit['id']} {audit['status']}{flagged}")
    print(scan["id"])
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
