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
                        "(default 2; e.g. 1 for the last position, 1,2,3 to spread them)")
    p.add_argument("--teacher", choices=("ones", "decaying", "modes", "mixed"), default="ones",
                   help="the teacher's impulse response: all ones (default), one decaying mode, several decaying "
                        "modes, or modes of mixed signs (not for network or digits)")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="FRACTION",
                   help="Gaussian noise on the training labels, its sd this fraction of the clean labels' sd")
    p.add_argument("--input-df", type=float, default=None, metavar="DF",
                   help="Student-t inputs with DF degrees of freedom (heavy tails) instead of N(0, 1)")
    p.add_argument("--label-scale", type=float, default=1.0, help="every label times this factor (default 1)")
    p.add_argument("--clean-late", type=float, default=0.0, metavar="SHARE",
                   help="this share of the clean sequences also carries small energy at late positions "
                        "(hard negatives)")
    p.add_argument("--camouflage", action="store_true",
                   help="each poison is an ordinary sequence plus its late energy")
    p.add_argument("--twin", action="store_true",
                   help="the clean twin: the same set with every poison replaced by an ordinary sequence")
    p.set_defaults(handler=run_make_benchmark)


def run_make_benchmark(args) -> int:
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    if args.kind == "digits":
        return _make_digits(args)
    try:
        positions = tuple(int(p) for p in args.poison_positions.split(","))
        spec = BenchmarkSpec(kind=args.kind, n=args.n or 200, poison_fraction=args.poison_fraction, length=args.length,
                             poison_positions=positions, seed=args.seed, teacher=args.teacher,
                             label_noise=args.label_noise, input_df=args.input_df, label_scale=args.label_scale,
                             clean_late=args.clean_late, camouflage=args.camouflage, twin=args.twin)
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
