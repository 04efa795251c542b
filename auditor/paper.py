"""The paper's three settings, their data, and the reproduction of its clean vs poisoned gap.

Slutzky, Alexander, Razin, Cohen, "The Implicit Bias of Structured State Space Models Can Be
Poisoned With Clean Labels" (arXiv 2410.10473); the published numbers are the means over
the 4 seeds of the authors' notebooks.

- ``theory`` (setting A): gradient flow on diag(A) only, B = C^T = ones; clean set e_1,
  poison e_{k-1}; error over J = 20.
- ``standalone`` (setting B): A, B, C trained by the normalized GD; 8 clean sequences with
  N(0,1) entries on the first positions, 10 poisons with one N(0,1) entry at position k-1;
  error over J = 40.
- ``network`` (setting C): the SSM in front of a ReLU MLP, Adam; 20 clean + 20 poisons;
  relative error on 2000 N(0,1) test sequences of length 40.

Every seed draws its own training set; all seeds and both variants (clean = the poisons
masked out, poisoned = everything) train together in one :func:`train_many` call over the
pooled sequences, the masks selecting each model's own set.

Facts of the authors' setup that the numbers depend on (their public code): training sets
are drawn by NumPy's legacy generator seeded with the experiment's seed (clean rows first),
which the published seeds were chosen under; the near-equal gap of the top two init entries
uses exp(-c log10(1/sigma_A)) with c = 5 (B, L=6), 3 (B, L=10), 0.5 (C, L=6), 2 (C, L=10).
Setting C runs in Keras (TensorFlow 2.4), and what that implies is reproduced: the
models start from the authors' own draws (``SSMSpec(init="keras")``: TensorFlow's stateless
normal stream and the layout their code gives it), training runs in float32, and Adam adds
eps = 1e-7 to the raw sqrt(v) (see :class:`auditor.train.TrainConfig`); the test set of each
seed is drawn with seed + 12. Setting C's clean runs are chaotic: a relative change of 1e-6
in the start moves a seed's error between ~1e-4 and ~0.15 (``benchmarks/network_seeds.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from auditor.metrics import extrapolation_error, reference_relative_error
from auditor.ssm import SSMSpec, forward, reverse_time, teacher_params
from auditor.train import TrainConfig, gradient_flow, train_many

SETTINGS = ("theory", "standalone", "network")


@dataclass(frozen=True)
class Setting:
    """One published experiment: data, student, optimizer and the published means."""

    name: str
    length: int
    state_dim: int
    seeds: tuple[int, ...]
    paper_clean: float
    paper_poisoned: float
    n_clean: int = 1
    n_poison: int = 1
    clean_positions: int = 1
    spec: SSMSpec | None = None
    train: TrainConfig | None = None
    poisoned_train: TrainConfig | None = None     # when the poisoned run used another config
    horizon: int = 40
    test_size: int = 2000
    test_length: int = 40
    init_sigma: float = 0.0                        # theory: a = sort(sigma * U[0,1]^d)
    init_gap: float = 0.0                          # theory: a[1] = a[0] - 0.05 exp(-gap log10(1/sigma))
    dtype: torch.dtype = torch.float64             # arithmetic of training (setting C: Keras' float32)


def get_setting(setting: str, length: int) -> Setting:
    """The published configuration of ``setting`` at training length ``length``."""
    try:
        return _SETTINGS[(setting, length)]
    except KeyError:
        known = ", ".join(f"{s} L={k}" for s, k in _SETTINGS)
        raise ValueError(f"no published {setting!r} experiment at length {length}; known: {known}") from None


_SETTINGS = {
    ("theory", 7): Setting("theory", 7, 10, (242, 243, 244, 246), 0.00127, 0.0501,
                           horizon=20, init_sigma=1e-3, init_gap=5.0),
    ("theory", 9): Setting("theory", 9, 20, (342, 344, 345, 346), 0.00734, 0.0351,
                           horizon=20, init_sigma=5e-3, init_gap=10.0),
    ("standalone", 6): Setting(
        "standalone", 6, 10, (200, 201, 204, 205), 0.194, 16.62, n_clean=8, n_poison=10,
        clean_positions=2, spec=SSMSpec(state_dim=10, sigma_a=1e-3),
        train=TrainConfig(optimizer="gd", lr=0.01, eps=0.01, extra_steps=1500, max_steps=200_000)),
    ("standalone", 10): Setting(
        "standalone", 10, 20, (1200, 1201, 1203, 1204), 0.121, 1.199, n_clean=8, n_poison=10,
        clean_positions=7, spec=SSMSpec(state_dim=20, sigma_a=1e-2, gap=3.0),
        train=TrainConfig(optimizer="gd", lr=1e-3, eps=0.01, extra_steps=1500, max_steps=200_000)),
    ("network", 6): Setting(
        "network", 6, 10, (4540, 4541, 4543, 4545), 0.00164, 0.0549, n_clean=20, n_poison=20,
        clean_positions=2,
        spec=SSMSpec(state_dim=10, sigma_a=0.01, sigma_b=0.01, sigma_c=0.01, offset=0.001, gap=0.5,
                     width=15, sigma_mlp=0.03, init="keras"), dtype=torch.float32,
        train=TrainConfig(optimizer="adam", lr=0.01, eps=0.01, extra_steps=5000, max_steps=200_000,
                          adam_eps=1e-7, adam_eps_style="keras")),
    ("network", 10): Setting(
        "network", 10, 20, (4540, 4543, 4544, 4545), 0.0450, 0.0893, n_clean=20, n_poison=20,
        clean_positions=7,
        spec=SSMSpec(state_dim=20, sigma_a=1e-3, sigma_b=1e-3, sigma_c=1e-3, offset=0.001, gap=2.0,
                     width=25, sigma_mlp=0.1, init="keras"), dtype=torch.float32,
        train=TrainConfig(optimizer="adam", lr=0.01, eps=0.05, extra_steps=5000, max_steps=200_000,
                          adam_eps=1e-7, adam_eps_style="keras"),
        poisoned_train=TrainConfig(optimizer="adam", lr=5e-5, eps=0.05, extra_steps=5000,
                                   max_steps=200_000, adam_eps=1e-7, adam_eps_style="keras")),
}


# --------------------------------------------------------------------------- data


def teacher_for(s: Setting) -> dict[str, torch.Tensor]:
    """The setting's teacher as a batch of one model."""
    if s.name == "theory":
        return teacher_params(state_dim=s.state_dim)
    return teacher_params(width=s.spec.width if s.spec else 0)


def make_data(s: Setting, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One seed's training set: sequences (n, k), teacher labels (n,), poison flags (n,).

    Clean sequences carry N(0, 1) entries on the first ``clean_positions`` positions;
    poisons a single N(0, 1) entry at position k-1 (1-indexed). Theory: e_1 and e_{k-1}.
    """
    k = s.length
    if s.name == "theory":
        clean = np.zeros((1, k))
        clean[0, 0] = 1.0
        poison = np.zeros((1, k))
        poison[0, k - 2] = 1.0
    else:
        # The authors' draws: NumPy's legacy generator seeded with the experiment's seed,
        # clean rows first, row by row, then the poisons (so the published seeds give the
        # published training sets).
        rng = np.random.RandomState(seed)
        clean = np.zeros((s.n_clean, k))
        clean[:, :s.clean_positions] = rng.normal(0.0, 1.0, (s.n_clean, s.clean_positions))
        poison = np.zeros((s.n_poison, k))
        poison[:, k - 2] = rng.normal(0.0, 1.0, s.n_poison)
    x = np.vstack([clean, poison])
    y = forward(teacher_for(s), reverse_time(torch.as_tensor(x)))[0].numpy()
    is_poison = np.r_[np.zeros(len(clean), bool), np.ones(len(poison), bool)]
    return x, y, is_poison


def test_set(s: Setting, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The network setting's test set for one seed: N(0,1) sequences of ``test_length``, labels.

    Drawn as the authors do: NumPy's legacy generator seeded with the experiment's seed + 12.
    """
    x = np.random.RandomState(seed + 12).normal(0.0, 1.0, (s.test_size, s.test_length))
    y = forward(teacher_for(s), reverse_time(torch.as_tensor(x)))[0].numpy()
    return x, y


# --------------------------------------------------------------------------- reproduction


def reproduce(*, setting: str, length: int, device: str = "cpu") -> dict:
    """Train clean and poisoned students over the published seeds and compare to the paper.

    Returns
    -------
    dict
        ``setting``, ``length``, ``state_dim``, ``seeds``, ``clean_errors``,
        ``poisoned_errors``, ``clean_error``, ``poisoned_error`` (means), ``paper``
        ({``clean``, ``poisoned``}), ``metric``, ``seconds``, and ``clean_converged`` /
        ``poisoned_converged`` (per seed). The means are over the runs that completed the
        paper's protocol (reached ``eps`` within ``max_steps``): a run that never fits its
        data has no generalization to measure.
    """
    s = get_setting(setting, length)
    start = time.perf_counter()
    if s.name == "theory":
        (clean, poisoned), converged = _reproduce_theory(s), ([True] * len(s.seeds),) * 2
        metric = f"extrapolation error, J={s.horizon}"
    else:
        clean, poisoned, converged = _reproduce_trained(s, device=device)
        metric = (f"extrapolation error, J={s.horizon}" if s.name == "standalone" else
                  f"relative error on {s.test_size} N(0,1) sequences of length {s.test_length}")
    return {
        "setting": s.name, "length": s.length, "state_dim": s.state_dim, "seeds": list(s.seeds),
        "clean_errors": clean, "poisoned_errors": poisoned,
        "clean_error": _mean_converged(clean, converged[0]),
        "poisoned_error": _mean_converged(poisoned, converged[1]),
        "clean_converged": list(converged[0]), "poisoned_converged": list(converged[1]),
        "paper": {"clean": s.paper_clean, "poisoned": s.paper_poisoned},
        "metric": metric, "seconds": round(time.perf_counter() - start, 2),
    }


def _mean_converged(errors: list[float], converged: list[bool]) -> float:
    kept = [e for e, ok in zip(errors, converged) if ok]
    return float(np.mean(kept)) if kept else float("nan")


def theory_init(s: Setting, seed: int) -> np.ndarray:
    """Setting A's init: a = sort_desc(sigma U[0,1]^d), a[1] = a[0] - 0.05 exp(-c log10(1/sigma))."""
    a = np.sort(s.init_sigma * np.random.default_rng(seed).random(s.state_dim))[::-1].copy()
    a[1] = a[0] - 0.05 * math.exp(-s.init_gap * math.log10(1.0 / s.init_sigma))
    return a


def _reproduce_theory(s: Setting) -> tuple[list[float], list[float]]:
    teacher = teacher_for(s)
    out: dict[bool, list[float]] = {False: [], True: []}
    for seed in s.seeds:
        x, y, is_poison = make_data(s, seed)
        a0 = theory_init(s, seed)
        for poisoned in (False, True):
            keep = np.ones(len(x), bool) if poisoned else ~is_poison
            a, _ = gradient_flow(a0, x[keep], y[keep])
            ones = torch.ones(1, s.state_dim, dtype=torch.float64)
            student = {"a": torch.as_tensor(a).reshape(1, -1), "b": ones, "c": ones}
            out[poisoned].append(float(extrapolation_error(student, teacher, horizon=s.horizon)[0]))
    return out[False], out[True]


def _reproduce_trained(s: Setting, *, device: str) -> tuple[list[float], list[float], tuple[list[bool], list[bool]]]:
    parts = [make_data(s, seed) for seed in s.seeds]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    owner = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
    poison = np.concatenate([p[2] for p in parts])
    clean_masks = np.stack([(owner == i) & ~poison for i in range(len(parts))])
    full_masks = np.stack([owner == i for i in range(len(parts))])
    seeds = list(s.seeds)
    runs = [(clean_masks, s.train), (full_masks, s.poisoned_train or s.train)]
    if s.poisoned_train is None:                                    # one batched call for both
        runs = [(np.vstack([clean_masks, full_masks]), s.train)]
        seeds = seeds + seeds
    errors: list[float] = []
    converged: list[bool] = []
    for masks, config in runs:
        run_seeds = seeds[:len(masks)]
        result = train_many(s.spec, x, y, masks, run_seeds, config, dtype=s.dtype, device=device)
        errors += student_errors(s, result.params, run_seeds)
        converged += result.converged.tolist()
    half = len(s.seeds)
    return errors[:half], errors[half:], (converged[:half], converged[half:])


def student_errors(s: Setting, params, seeds: list[int]) -> list[float]:
    """The setting's error of each trained student (M models, model m from ``seeds[m]``).

    Evaluated in float64: the extrapolation error (standalone), or the relative error on
    the test set of the model's seed (network).
    """
    params = {k: v.double() for k, v in params.items()}
    if s.name == "standalone":
        return extrapolation_error(params, teacher_for(s), horizon=s.horizon).tolist()
    errors = []
    for m, seed in enumerate(seeds):
        x_test, y_test = test_set(s, seed)
        model = {k: v[m:m + 1] for k, v in params.items()}
        errors.append(float(reference_relative_error(model, x_test, y_test)[0]))
    return errors
