"""``make-benchmark``: poisoned data sets with ground truth."""

from __future__ import annotations

from auditor.cli.common import CLIError

KINDS = ("standalone", "network", "decoys", "clean", "digits")


def add_commands(commands) -> None:
    p = commands.add_parser("make-benchmark", help="write a poisoned data set with ground truth",
                            description="Write a poisoned data set with ground truth (is_poison) to an .npz file.")
    p.add_argument("--kind", choices=KINDS, required=True,
                   help="generated regression sets (standalone, network, decoys, clean), or digits: scikit-learn's "
                        "8x8 digits as 64-step pixel sequences with crafted poisons")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output .npz")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--n", type=int, default=None, help="training examples (default 200; digits 600)")
    p.add_argument("--poison-fraction", type=float, default=0.05, help="default 0.05")
    p.add_argument("--length", type=int, default=6, help="training sequence length k (default 6; not for digits)")
    p.add_argument("--poison-positions", default="2",
                   help="comma-separated positions counted from the end (2 = k-1) that carry a poison's energy "
                        "(default 2)")
    p.add_argument("--channels", type=int, default=1,
                   help="input channels c: x of shape (n, k, c) when c > 1 (default 1; not for digits)")
    p.add_argument("--outputs", type=int, default=1,
                   help="regression outputs m: y of shape (n, m) when m > 1 (default 1; not for digits)")
    p.set_defaults(handler=run_make_benchmark)


def run_make_benchmark(args) -> int:
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    if args.kind == "digits":
        return _make_digits(args)
    try:
        positions = tuple(int(p) for p in args.poison_positions.split(","))
        spec = BenchmarkSpec(kind=args.kind, n=args.n or 200, poison_fraction=args.poison_fraction, length=args.length,
                             poison_positions=positions, seed=args.seed, channels=args.channels,
                             outputs=args.outputs)
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
