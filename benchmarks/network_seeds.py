"""How chaotic is the paper's network setting? Each published seed, retrained from jittered starts.

Every seed's clean (or poisoned) student is trained ``--replicas`` times: once from the
authors' start, then from starts with every parameter multiplied by (1 + rel * N(0, 1)).
A relative jitter of 1e-6 is below what separates two float32 implementations of the same
run, so the spread of the errors is the spread a reproduction can expect per seed.

    python benchmarks/network_seeds.py --length 6 --replicas 8 --jitter 1e-6
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from auditor.paper import get_setting, make_data, student_errors
from auditor.ssm import init_params
from auditor.train import train_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=6, choices=(6, 10))
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--jitter", type=float, default=1e-6, help="relative jitter of the starts")
    ap.add_argument("--poisoned", action="store_true", help="train on the poisoned sets instead")
    args = ap.parse_args()
    torch.set_num_threads(1)

    s = get_setting("network", args.length)
    config = (s.poisoned_train or s.train) if args.poisoned else s.train
    config = dataclasses.replace(config, max_steps=max(config.max_steps, 300_000))
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    print(f"network L={args.length}, {'poisoned' if args.poisoned else 'clean'}, {args.replicas} starts per seed "
          f"(the first unjittered), jitter {args.jitter:g}, {s.dtype}")
    for seed in s.seeds:
        x, y, is_poison = make_data(s, seed)
        keep = np.ones(len(x), bool) if args.poisoned else ~is_poison
        base = init_params(s.spec, [seed])
        init = {k: v.repeat(args.replicas, *[1] * (v.ndim - 1)) for k, v in base.items()}
        for v in init.values():
            v[1:] *= 1 + args.jitter * torch.randn(v[1:].shape, generator=gen, dtype=v.dtype)
        result = train_many(s.spec, x, y, np.tile(keep, (args.replicas, 1)), [seed] * args.replicas, config,
                            init=init, dtype=s.dtype)
        errors = np.array(student_errors(s, result.params, [seed] * args.replicas))
        errors[~result.converged.numpy()] = np.nan
        shown = " ".join(f"{e:.2g}" for e in errors)
        print(f"seed {seed}: median {np.nanmedian(errors):.3g}, unjittered {errors[0]:.3g}; all: {shown}", flush=True)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
