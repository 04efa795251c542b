"""``reproduce`` and ``bench``: the paper's numbers, throughput and detection benchmarks."""

from __future__ import annotations

from auditor.cli.common import CLIError, add_device_flag, add_json_flag, add_strategy_flag


def add_commands(commands) -> None:
    p = commands.add_parser("reproduce", help="reproduce the paper's clean vs poisoned numbers",
                            description="Train clean and poisoned students over the paper's seeds and print the "
                                        "errors beside the published means.")
    p.add_argument("--setting", choices=("theory", "standalone", "network"), required=True)
    p.add_argument("--length", type=int, required=True, help="training sequence length k")
    add_device_flag(p)
    add_json_flag(p, "print JSON instead of a table")
    p.set_defaults(handler=run_reproduce)

    p = commands.add_parser("bench", help="performance and detection benchmarks")
    sub = p.add_subparsers(title="benchmarks", metavar="BENCHMARK", required=True)
    t = sub.add_parser("train", help="models/s of the batched trainer (setting B, L=6)")
    t.add_argument("--models", type=int, default=2048, help="default 2048")
    t.add_argument("--epochs", type=int, default=3000, help="fixed number of GD steps (default 3000)")
    add_device_flag(t)
    t.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    add_json_flag(t)
    t.set_defaults(handler=run_bench_train)
    d = sub.add_parser("detect", help="precision/recall of the audit and the baselines over a benchmark suite")
    d.add_argument("--suite", choices=("default", "quick", "wide"), default="default",
                   help="default: 16 hand-made sets; quick: 4 of them; wide: sets drawn from --suite-seed over "
                        "teachers, label noise, heavy tails, label scale, poison placements, camouflage, large n and "
                        "hard negatives, each poisoned set with its clean twin")
    d.add_argument("--quick", action="store_true", help="the same as --suite quick")
    d.add_argument("--sets", type=int, default=18, help="wide: how many sets to draw (default 18; twins come on top)")
    d.add_argument("--max-n", type=int, default=5000, help="wide: the largest n drawn (default 5000)")
    d.add_argument("--suite-seed", type=int, default=0, help="wide: the seed the sets are drawn from (default 0)")
    add_strategy_flag(d, "; the baselines do not depend on it")
    add_json_flag(d)
    d.set_defaults(handler=run_bench_detect)


def run_reproduce(args) -> int:
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


def run_bench_train(args) -> int:
    from auditor.bench import bench_train
    from auditor.render import print_json

    result = bench_train(models=args.models, epochs=args.epochs, device=args.device, dtype=args.dtype)
    if args.json:
        print_json(result)
    else:
        print(f"{result['models']} models x {result['epochs']} steps in {result['seconds']:.2f} s: "
              f"{result['models_per_second']:.1f} models/s on {result['device']}")
    return 0


def run_bench_detect(args) -> int:
    import torch
    from rich.console import Console

    from auditor.config import AuditConfig
    from auditor.render import print_json
    from auditor.suite import default_suite, quick_suite, run_suite, summarize, wide_suite

    torch.set_num_threads(1)
    suite = "quick" if args.quick else args.suite
    if suite == "wide" and (args.sets < 1 or args.max_n < 60):
        raise CLIError("--sets must be at least 1 and --max-n at least 60")
    specs = {"quick": quick_suite, "default": default_suite,
             "wide": lambda: wide_suite(seed=args.suite_seed, sets=args.sets, max_n=args.max_n)}[suite]()
    console = Console(stderr=True)

    def on_row(row: dict) -> None:
        if not args.json:
            d = row["detector"]
            g = row["generalization"]
            console.print(f"  {row['kind']:<10} n={row['n']:<5} L={row['length']} poisons={row['poisons']:<3} "
                          f"flagged={row['flagged']:<3} P={_fmt(d['precision'])} R={_fmt(d['recall'])} "
                          f"trials={d['trials']} {d['seconds']:.0f}s harm={_fmt(g['harm_ratio'])}x"
                          + (" twin" if row["twin"] else "") + "".join(f" {k}={v}" for k, v in row["variations"].items())
                          + (" NOT FITTED" if row["verdict"] == "not_fitted" else ""))

    rows = run_suite(specs, config=AuditConfig(strategy=args.strategy), on_row=on_row)
    summary = summarize(rows)
    if args.json:
        print_json({"rows": rows, "summary": summary})
    else:
        _print_detection(rows, summary)
    return 0


def _print_detection(rows: list[dict], summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

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
    h, fa, tr = summary["harmful"], summary["false_alarms"], summary["trials"]
    print(f"harmful sets (measured: {h['rule']}): {h['sets']}; precision {_fmt(h['precision'])}, recall "
          f"{_fmt(h['recall'])}, within 1.5x of clean-only after removal {_fmt(h['within_1_5x_of_clean'])}; "
          f"poisoned sets without measured harm: {summary['poisoned_not_harmful']['sets']}")
    print(f"false alarms over {fa['sets']} clean sets ({fa['clean_twins']} twins): {fa['flagged_sets']} flagged, rate "
          f"{_fmt(fa['rate'])} (exact 95% CI {_fmt(fa['ci95'][0])}-{_fmt(fa['ci95'][1])}); trials mean "
          f"{_fmt(tr['mean'])}, max {_fmt(tr['max'])}, per example {_fmt(tr['per_example_mean'])}, "
          f"slope of log trials on log n {_fmt(tr['log_slope_vs_n'])}; sets whose models did not fit: "
          f"{summary['not_fitted']}")
    print("baselines (mean AUROC, P@k): " + ", ".join(
        f"{k} {_fmt(v['auroc'])}/{_fmt(v['precision_at_k'])}" for k, v in summary["baselines"].items()))


def _fmt(value) -> str:
    from auditor.render import fmt

    return fmt(value)
