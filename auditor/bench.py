"""Throughput of the batched trainer, and the one-model-at-a-time NumPy baseline it is held to.

The workload is the paper's setting B at L = 6 (8 clean + 10 poison sequences of seed 200),
d = 10, float64, a fixed number of normalized-GD steps, M random half-masks: what an audit
does when it retrains on random subsets.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from auditor.paper import get_setting, make_data
from auditor.ssm import init_params
from auditor.train import TrainConfig, train_many


def bench_workload(models: int, *, seed: int = 200):
    """Data (x, y), M random half-masks (M, n) and M seeds of the benchmark."""
    setting = get_setting("standalone", 6)
    x, y, _ = make_data(setting, seed)
    rng = np.random.default_rng(seed)
    n = len(x)
    masks = np.zeros((models, n))
    for m in range(models):
        masks[m, rng.permutation(n)[: n // 2]] = 1.0
    return setting, x, y, masks, list(range(models))


def bench_train(*, models: int, epochs: int, device: str = "cpu", dtype: str = "float64") -> dict:
    """Train ``models`` models for exactly ``epochs`` steps with :func:`train_many`; time it.

    Returns
    -------
    dict with ``models``, ``epochs``, ``seconds``, ``models_per_second``, ``device``,
    ``dtype``, ``gflops`` (achieved) and ``threads``.
    """
    setting, x, y, masks, seeds = bench_workload(models)
    config = TrainConfig.fixed(epochs, optimizer="gd", lr=setting.train.lr)
    torch_dtype = getattr(torch, dtype)
    init = init_params(setting.spec, seeds, dtype=torch_dtype, device=device)   # not timed
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_many(setting.spec, x, y, masks, seeds, config, dtype=torch_dtype, device=device, init=init)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    flops = models * epochs * ssm_gd_flops(d=setting.state_dim, k=x.shape[1], n=x.shape[0])
    return {"models": models, "epochs": epochs, "seconds": round(seconds, 4),
            "models_per_second": models / seconds, "device": device, "dtype": dtype,
            "gflops": flops / seconds / 1e9, "threads": torch.get_num_threads()}


def ssm_gd_flops(*, d: int, k: int, n: int) -> int:
    """Floating-point operations of one normalized-GD step of one standalone SSM.

    Counted from :func:`auditor.train.ssm_loss_and_grad` (powers, kernel, residuals, the
    three gradient contractions) and the update (norms and axpys of 3 d parameters).
    """
    forward = d * k + 2 * d * k + 2 * k * n + 4 * n
    backward = 2 * n * k + 2 * d * k + k + 2 * d * k + 4 * d
    update = 3 * 2 * d + 3 * 2 * d + 8
    return forward + backward + update


def peak_gflops() -> dict:
    """A rough double-precision peak of this CPU: cores x clock x FLOP/cycle from its ISA."""
    cores = len(os.sched_getaffinity(0))
    mhz, flags = 0.0, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":")[1])
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    per_cycle = 32 if "avx512f" in flags else 16 if "fma" in flags else 4   # DP FLOP/cycle/core
    return {"cores": cores, "mhz": mhz, "flop_per_cycle": per_cycle,
            "gflops": cores * mhz * 1e-3 * per_cycle}


def numpy_train_one(x: np.ndarray, y: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray,
                    c: np.ndarray, *, steps: int, lr: float, beta: float = 0.8):
    """The same normalized GD for one standalone SSM, written plainly in NumPy.

    The baseline of the throughput claim and an independent check of the trainers:
    y_hat_n = sum_j kappa_j x_{n,k-j}, kappa_j = sum_i c_i b_i a_i^j, loss = mean over the
    kept examples of (y_hat - y)^2, step lr / (sqrt(EMA(|g_a|+|g_b|+|g_c|)/(1-beta^t)) + 1e-6).
    """
    keep = np.asarray(mask, bool)
    xr, yk = np.asarray(x, float)[keep][:, ::-1], np.asarray(y, float)[keep]
    a, b, c = (np.array(v, dtype=float) for v in (a, b, c))
    n, k = xr.shape
    j = np.arange(k)
    ema = 0.0
    for t in range(1, steps + 1):
        P = a[:, None] ** j                                   # (d, k)
        res = (c * b) @ P @ xr.T - yk                         # (n,)
        G = 2.0 / n * res @ xr                                # (k,)
        PG = P @ G
        ga = c * b * (P[:, :-1] @ (j[1:] * G[1:]))
        gb, gc = c * PG, b * PG
        ema = beta * ema + (1 - beta) * (np.linalg.norm(ga) + np.linalg.norm(gb) + np.linalg.norm(gc))
        step = lr / (np.sqrt(ema / (1 - beta ** t)) + 1e-6)
        a, b, c = a - step * ga, b - step * gb, c - step * gc
    return a, b, c


def bench_numpy_loop(*, models: int, epochs: int) -> dict:
    """Models/s of :func:`numpy_train_one` over the first ``models`` masks of the workload."""
    setting, x, y, masks, seeds = bench_workload(models)
    init = init_params(setting.spec, seeds)
    start = time.perf_counter()
    for m in range(models):
        numpy_train_one(x, y, masks[m], init["a"][m].numpy(), init["b"][m].numpy(),
                        init["c"][m].numpy(), steps=epochs, lr=setting.train.lr)
    seconds = time.perf_counter() - start
    return {"models": models, "epochs": epochs, "seconds": round(seconds, 4),
            "models_per_second": models / seconds}
