"""Models/s of the batched trainer against one-model-at-a-time loops, measured in one run.

    python benchmarks/train_throughput.py [--models 2048] [--epochs 3000] [--loop-models 32]

Workload: the paper's setting B at L = 6 (seed 200), d = 10, float64, a fixed number of
normalized-GD steps on random half-masks. The loops (plain NumPy, and ``train_one`` with
autograd) train the first ``--loop-models`` masks; their models/s is what a one-at-a-time
audit gets. The ratio of rates is printed, and the achieved GFLOP/s beside a peak estimate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from auditor.bench import bench_numpy_loop, bench_train, bench_workload, peak_gflops
from auditor.train import TrainConfig, train_one


def train_one_loop(*, models: int, epochs: int) -> dict:
    setting, x, y, masks, seeds = bench_workload(models)
    config = TrainConfig.fixed(epochs, optimizer="gd", lr=setting.train.lr)
    start = time.perf_counter()
    for m in range(models):
        train_one(setting.spec, x, y, masks[m], seeds[m], config)
    seconds = time.perf_counter() - start
    return {"models": models, "seconds": seconds, "models_per_second": models / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--loop-models", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    numpy_loop = bench_numpy_loop(models=args.loop_models, epochs=args.epochs)
    one_loop = train_one_loop(models=max(2, args.loop_models // 8), epochs=args.epochs)
    many = bench_train(models=args.models, epochs=args.epochs, device=args.device)
    peak = peak_gflops()

    print(f"workload: setting B L=6, d=10, float64, {args.epochs} normalized-GD steps, random half-masks; "
          f"torch {torch.__version__}, {many['threads']} threads")
    print(f"{'trainer':<28}{'models':>8}{'seconds':>10}{'models/s':>12}{'vs numpy':>10}")
    for name, r in (("numpy loop (one at a time)", numpy_loop), ("train_one loop (autograd)", one_loop),
                    (f"train_many ({args.device})", many)):
        print(f"{name:<28}{r['models']:>8}{r['seconds']:>10.2f}{r['models_per_second']:>12.1f}"
              f"{r['models_per_second'] / numpy_loop['models_per_second']:>9.1f}x")
    if args.device == "cpu":
        print(f"train_many: {many['gflops']:.2f} GFLOP/s achieved; peak estimate {peak['gflops']:.0f} GFLOP/s "
              f"({peak['cores']} cores x {peak['mhz']:.0f} MHz x {peak['flop_per_cycle']} DP FLOP/cycle): "
              f"{100 * many['gflops'] / peak['gflops']:.1f}% of peak")
    else:
        print(f"train_many: {many['gflops']:.2f} GFLOP/s achieved on {args.device}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
