"""``demo``, ``audit``, ``clean`` and ``report-schema``: audits in this process (or on a Ray
cluster), a cleaned copy of a data set, and the report's JSON schema."""

from __future__ import annotations

import sys
from pathlib import Path

from auditor.cli.common import (
    CONFIRM_SEEDS,
    EXIT_CLEAN,
    EXIT_FAILED,
    EXIT_FLAGGED,
    CLIError,
    add_audit_flags,
    add_client_flags,
    add_ray_address_flag,
    add_report_outputs,
    audit_config,
    report_code,
    server_stack,
)


def add_commands(commands) -> None:
    p = commands.add_parser("demo", help="build a poisoned benchmark, audit it, print the verdict, write a report",
                            description="Build a poisoned benchmark with harmless outliers, audit it, print the "
                                        "verdict with precision and recall, and write report.json and report.html.")
    p.add_argument("--out-dir", default="auditor-demo", help="where the data set and reports go "
                                                             "(default auditor-demo)")
    p.set_defaults(handler=run_demo)

    p = commands.add_parser("audit", help="audit a data set (.npz, .csv or .parquet) for clean-label poisons",
                            description="Audit a data set (.npz, CSV or Parquet; see docs/data.md) in this "
                                        "process, or on Ray retrainer actors with --executor ray. Exit status 1 "
                                        "if examples are flagged.")
    p.add_argument("file", help="the data set: .npz (x, y, and optionally x_val, y_val, is_poison), or a .csv or "
                                ".parquet table (columns x_0.., y, and optionally split, is_poison; see docs/data.md)")
    add_audit_flags(p, local=True)
    p.add_argument("--executor", choices=("inline", "ray"), default="inline",
                   help="where trials train: this process, or retrainer actors on a Ray cluster")
    add_ray_address_flag(p, "Ray cluster to use with --executor ray (default: start a local one)")
    add_report_outputs(p)
    p.set_defaults(handler=run_audit_command)

    p = commands.add_parser("clean", help="write a copy of a data set without the examples an audit flagged",
                            description="Write a copy of a data set without the examples an audit flagged: from "
                                        "a local file and its JSON report, or (--audit) from a server audit.")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="the audited data set (.npz, .csv or .parquet); with --report")
    p.add_argument("--report", metavar="REPORT.json", help="the audit's JSON report (auditor audit --out)")
    p.add_argument("--audit", metavar="ID", help="a succeeded audit on the server, instead of FILE and --report")
    p.add_argument("--out", metavar="CLEANED.npz", required=True,
                   help="where the cleaned data set goes (.npz; .csv or .parquet by its suffix)")
    add_client_flags(p)
    p.set_defaults(handler=run_clean)

    p = commands.add_parser("report-schema", help="print the JSON schema of an audit report",
                            description="Print the JSON schema of the report that audit --out, report and the API "
                                        "return (generated from auditor.report_schema.Report).")
    p.set_defaults(handler=run_report_schema)


def run_report_schema(args) -> int:
    from auditor.report_schema import report_json_schema_text

    sys.stdout.write(report_json_schema_text())
    return 0


def run_demo(args) -> int:
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
    config = audit_config(strategy="auto", seed=0, confirm_seeds=CONFIRM_SEEDS, device="cpu")
    code = audit_file(str(data), config, as_json=False, json_path=out / "report.json", html_path=out / "report.html")
    return EXIT_CLEAN if code in (EXIT_CLEAN, EXIT_FLAGGED) else code  # flags are the demo's expected result, not a failure


def run_audit_command(args) -> int:
    if args.ray_address and args.executor != "ray":
        raise CLIError("--ray-address needs --executor ray")
    config = audit_config(strategy=args.strategy, budget=args.budget, seed=args.seed, confirm_seeds=args.confirm_seeds,
                          model=args.model, mode=args.mode, device=args.device)
    return audit_file(args.file, config, as_json=args.json, json_path=args.out, html_path=args.html,
                      executor=args.executor, ray_address=args.ray_address)


def audit_file(path: str, config, *, as_json: bool, json_path, html_path, executor: str = "inline",
               ray_address: str | None = None) -> int:
    """Audit the data set at ``path``; print the verdict (or the JSON report) and write the reports.

    Returns 1 if examples were flagged, 3 if the models did not fit the data (no verdict), else 0.
    """
    import torch

    from auditor.engine import run_audit
    from auditor.cli.progress import audit_progress
    from auditor.data import load_dataset
    from auditor.render import print_json, print_report
    from auditor.report import build_report, write_report

    dataset = load_dataset(path)
    if config.device == "cpu":
        torch.set_num_threads(1)            # tiny models: one thread is as fast, and leaves a core free
    runner = _ray_executor(dataset, config, ray_address) if executor == "ray" else None
    with audit_progress(disable=as_json) as progress:
        try:
            result = run_audit(dataset, config, executor=runner, progress=progress)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    report = build_report(result, dataset, config)
    write_report(report, json_path=json_path, html_path=html_path)
    if as_json:
        print_json(report)
    else:
        print_report(report, json_path=json_path, html_path=html_path)
    code = report_code(report)
    if code == EXIT_FAILED:
        print("auditor: error: the run failed: training did not fit (see the verdict)", file=sys.stderr)
    return code


def _ray_executor(dataset, config, ray_address: str | None):
    from auditor.engine import build_problem

    with server_stack("audit --executor ray"):
        from workers.executor import RayExecutor
        from workers.pool import RetrainerPool
        from workers.service import connect

    try:
        problem = build_problem(dataset, config)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    connect(ray_address)
    return RayExecutor(problem, RetrainerPool())


def run_clean(args) -> int:
    if args.audit:
        if args.file or args.report:
            raise CLIError("clean takes either FILE --report REPORT.json or --audit ID, not both")
        return _clean_server(args)
    if not args.file or not args.report:
        raise CLIError("clean needs FILE and --report REPORT.json (or --audit ID for a server audit)")
    from auditor.cleaning import clean_file

    try:
        result = clean_file(args.file, report=args.report, out=args.out)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    print(_cleaned_line(args.out, result))
    return 0


def _clean_server(args) -> int:
    """Download the server's cleaned copy (an .npz) to ``args.out``; a ``.csv`` or ``.parquet``
    ``args.out`` gets it as a table."""
    import tempfile

    from auditor.cli.client import client_call, open_client
    from auditor.data import load_dataset, save_dataset, sha256_bytes

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="auditor-clean-") as tmp, open_client(args) as client:
        npz = Path(tmp) / "cleaned.npz"
        client_call(client.cleaned, args.audit, npz)
        dataset = load_dataset(npz)
        try:
            if out.suffix.lower() in (".csv", ".parquet"):
                arrays = {name: getattr(dataset, name) for name in ("x", "y", "x_val", "y_val", "is_poison")
                          if getattr(dataset, name) is not None}
                sha = save_dataset(out, **arrays)
            else:
                out.write_bytes(npz.read_bytes())
                sha = sha256_bytes(npz.read_bytes())
        except OSError as exc:
            raise CLIError(f"cannot write {out}: {exc.strerror}") from None
    print(f"wrote {out}: {dataset.n} training examples, sha256 {sha}")
    return 0


def _cleaned_line(out: str, result: dict) -> str:
    return f"wrote {out}: kept {result['kept']}, removed {result['removed']}, sha256 {result['sha256']}"
