"""Models/s of TorchModel's vectorized trainer against a plain per-model loop, in one run.

    python benchmarks/torch_model_throughput.py [--models 256] [--steps 200] [--model ssm|mlp]
                                                [--threads 1] [--dtype float64] [--json]

Workload: the ``decoys`` benchmark set (n = 200, length 6, seed 7), one random 80% mask and
one seed per model, a fixed number of full-batch updates (no stopping rule, so both sides do
the same work). ``ssm`` is the paper's standalone diagonal SSM written as an nn.Module
(d = 10, normalized GD); ``mlp`` a small MLP on the flattened sequence (Adam). The adapter
(:func:`auditor.torch_model.train_many`: all models at once with ``stack_module_state`` and
``vmap``) trains all ``--models``; the loop (:func:`auditor.torch_model.train_one`: ordinary
autograd and ``torch.optim``, one model at a time) trains the first ``--loop-models`` (all
by default). Both run on the CPU with ``--threads`` threads (1 by default: on a machine
whose cores other work shares, torch's thread pool spins and small products slow down
many-fold; pass the core count on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.torch_model import TorchModel, train_many, train_one


class DiagonalSSM(nn.Module):
    """The paper's standalone SSM: y = sum_j C A^j B x_{k-j}, A = diag(a), near-zero init."""

    def __init__(self, seed: int, state_dim: int = 10, sigma: float = 1e-3, offset: float = 0.1):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        near = 0.05 * math.exp(-5.0 * math.log10(1.0 / sigma))

        def sorted_abs() -> torch.Tensor:
            v = (torch.randn(state_dim, generator=gen, dtype=torch.float64) * sigma).abs().sort(descending=True).values
            v[1] = v[0] - near
            return v

        self.a = nn.Parameter(sorted_abs() + offset)
        self.b = nn.Parameter(sorted_abs() + offset)
        self.c = nn.Parameter((torch.randn(state_dim, generator=gen, dtype=torch.float64) * sigma)
                              .abs().sort(descending=True).values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x[..., 0].flip(-1)
        j = torch.arange(u.shape[-1], dtype=u.dtype, device=u.device)
        return (u @ ((self.c * self.b) @ (self.a[:, None] ** j)))[:, None]


def ssm(seed: int) -> nn.Module:
    return DiagonalSSM(seed)


def mlp(seed: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 1))


MODELS = {"ssm": lambda steps, dtype: TorchModel(ssm, optimizer="ngd", lr=0.01, steps=steps, dtype=dtype),
          "mlp": lambda steps, dtype: TorchModel(mlp, optimizer="adam", lr=0.01, steps=steps, dtype=dtype)}


def measure(*, model: str, models: int, steps: int, loop_models: int, dtype: str) -> dict:
    data = make_benchmark(BenchmarkSpec(kind="decoys", n=200, poison_fraction=0.05, length=6, seed=7))
    x, y = data["x"][:, :, None], data["y"]
    masks = np.random.default_rng(0).random((models, len(y))) < 0.8
    spec = MODELS[model](steps, dtype)
    train_many(spec, x, y, masks[:2], [0, 1])                                  # warm-up
    start = time.perf_counter()
    train_many(spec, x, y, masks, list(range(models)))
    many = time.perf_counter() - start
    start = time.perf_counter()
    for m in range(loop_models):
        train_one(spec, x, y, masks[m], m)
    loop = time.perf_counter() - start
    return {"model": model, "models": models, "loop_models": loop_models, "steps": steps, "dtype": dtype,
            "threads": torch.get_num_threads(), "adapter_seconds": many, "loop_seconds": loop,
            "adapter_models_per_second": models / many, "loop_models_per_second": loop_models / loop,
            "ratio": (models / many) / (loop_models / loop)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--loop-models", type=int, default=0, help="models the loop trains (0: all)")
    parser.add_argument("--model", choices=tuple(MODELS), default="ssm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = measure(model=args.model, models=args.models, steps=args.steps, loop_models=args.loop_models or args.models,
                dtype=args.dtype)
    if args.json:
        print(json.dumps(r))
        return
    print(f"workload: {r['model']}, decoys n=200 L=6, {r['steps']} full-batch steps, {r['dtype']}, "
          f"CPU, {r['threads']} thread(s), torch {torch.__version__}")
    print(f"{'trainer':<34}{'models':>8}{'seconds':>10}{'models/s':>12}")
    print(f"{'plain loop (train_one, autograd)':<34}{r['loop_models']:>8}{r['loop_seconds']:>10.2f}"
          f"{r['loop_models_per_second']:>12.1f}")
    print(f"{'TorchModel (vmap, all at once)':<34}{r['models']:>8}{r['adapter_seconds']:>10.2f}"
          f"{r['adapter_models_per_second']:>12.1f}")
    print(f"ratio: {r['ratio']:.1f}x")


if __name__ == "__main__":
    main()
