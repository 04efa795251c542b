"""``make-benchmark``: poisoned data sets with ground truth."""

from __future__ import annotations

from auditor.cli.common import CLIError

KINDS = ("standalone", "network", "decoys", "clean", "digits", "ucr")
# auditor.ucr.DATASETS and ATTACKS, spelled out so that building the parser imports neither aeon nor numpy
UCR_DATASETS = ("ItalyPowerDemand", "GunPoint", "ArrowHead", "OSULeaf", "JapaneseVowels", "BasicMotions")
UCR_ATTACKS = ("none", "untargeted", "targeted", "collision")


def add_commands(commands) -> None:
    p = commands.add_parser("make-benchmark", help="write a poisoned data set with ground truth",
                            description="Write a poisoned data set with ground truth (is_poison) to an .npz "
                                        "file (or a .csv or .parquet table, by the suffix of --out).")
    p.add_argument("--kind", choices=KINDS, required=True,
                   help="generated regression sets (standalone, network, decoys, clean), or digits: scikit-learn's "
                        "8x8 digits as 64-step pixel sequences with crafted poisons, or ucr: a UCR/UEA set bundled with "
                        "aeon (--dataset, --attack; needs auditor[data])")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output .npz (or .csv / .parquet)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--n", type=int, default=None, help="training examples (default 200; digits 600; ucr 40%% of the set)")
    p.add_argument("--poison-fraction", type=float, default=None, help="default 0.05 (ucr 0.1)")
    p.add_argument("--dataset", choices=UCR_DATASETS, default=None, help="the UCR/UEA set (ucr only)")
    p.add_argument("--attack", choices=UCR_ATTACKS, default=None,
                   help="ucr only: none (the clean re-split), untargeted or targeted gradient matching, or a targeted "
                        "late collision (docs/benchmarks.md)")
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
    p.add_argument("--channels", type=int, default=1,
                   help="input channels c: x of shape (n, k, c) when c > 1 (default 1; not for digits)")
    p.add_argument("--outputs", type=int, default=1,
                   help="regression outputs m: y of shape (n, m) when m > 1 (default 1; not for digits)")
    p.set_defaults(handler=run_make_benchmark)

    c = commands.add_parser("convert", help="write a .ts training file (and a reference .ts) as an audit .npz",
                            description="Write UCR/UEA .ts files as an audit data set: TRAIN.ts gives x and y, "
                                        "--reference REF.ts the trusted reference split x_val and y_val, with the "
                                        "classes of both numbered together (needs auditor[data]).")
    c.add_argument("file", metavar="TRAIN.ts", help="the training set (.ts)")
    c.add_argument("--reference", metavar="REF.ts", help="the trusted reference split (.ts)")
    c.add_argument("--out", required=True, metavar="FILE.npz", help="output .npz")
    c.set_defaults(handler=run_convert)


def run_make_benchmark(args) -> int:
    from auditor.benchmarks import BenchmarkSpec, make_benchmark
    from auditor.data import save_dataset

    if args.kind == "ucr":
        return _make_ucr(args)
    if args.dataset is not None or args.attack is not None:
        raise CLIError("--dataset and --attack are for --kind ucr")
    if args.poison_fraction is None:
        args.poison_fraction = 0.05
    if args.kind == "digits":
        return _make_digits(args)
    try:
        positions = tuple(int(p) for p in args.poison_positions.split(","))
        spec = BenchmarkSpec(kind=args.kind, n=args.n or 200, poison_fraction=args.poison_fraction, length=args.length,
                             poison_positions=positions, seed=args.seed, teacher=args.teacher,
                             label_noise=args.label_noise, input_df=args.input_df, label_scale=args.label_scale,
                             clean_late=args.clean_late, camouflage=args.camouflage, twin=args.twin,
                             channels=args.channels, outputs=args.outputs)
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


def _make_ucr(args) -> int:
    import torch

    from auditor.data import save_dataset
    from auditor.ucr import MissingExtra, make_ucr_benchmark

    if args.dataset is None or args.attack is None:
        raise CLIError("--kind ucr needs --dataset NAME and --attack {" + ",".join(UCR_ATTACKS) + "}")
    overrides = {}
    if args.poison_fraction is not None:
        if not 0 < args.poison_fraction <= 0.5:
            raise CLIError("--poison-fraction must be in (0, 0.5]")
        overrides["fraction"] = args.poison_fraction
    torch.set_num_threads(1)
    try:
        arrays = make_ucr_benchmark(args.dataset, attack=args.attack, seed=args.seed, n_train=args.n, **overrides)
    except MissingExtra as exc:
        raise CLIError(str(exc)) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    digest = save_dataset(args.out, **arrays)
    x = arrays["x"]
    shape = f"length {x.shape[1]}" + (f", {x.shape[2]} channels" if x.ndim == 3 else "")
    print(f"wrote {args.out}: {args.dataset}, {len(x)} training sequences of {shape}, "
          f"{int(arrays['is_poison'].sum())} poisons ({args.attack}), {len(arrays['x_val'])} trusted, "
          f"{len(arrays.get('x_test', []))} test, sha256 {digest}")
    return 0


def run_convert(args) -> int:
    from auditor.data import DatasetError, save_dataset
    from auditor.ucr import ts_arrays

    try:
        arrays = ts_arrays(args.file, reference=args.reference)
        digest = save_dataset(args.out, **arrays)
    except DatasetError as exc:
        raise CLIError(str(exc)) from None
    reference = f", {len(arrays['x_val'])} reference sequences" if "x_val" in arrays else ""
    print(f"wrote {args.out}: {len(arrays['x'])} training sequences{reference}, sha256 {digest}")
    return 0
