"""The built-in student for sequences with several channels or several outputs.

A multi-input, multi-output diagonal SSM of state dimension d reads a sequence
u_1..u_K of c channels and reports m outputs at the last position:

    h_t = A h_{t-1} + B u_t,      y_hat = C h_K,      A = diag(a)                   (1)

a (d,), B (d, c), C (m, d). Unrolled, the output is a sum of matrix kernels

    y_hat = sum_{j=0..K-1} C A^j B u_{K-j}                                          (2)

which with c = m = 1 is the single-channel student of :mod:`auditor.ssm` (its eq. (1)-(2),
setting B of Slutzky et al., arXiv 2410.10473), generalized. The start is that student's
near-zero one (:class:`auditor.ssm.SSMSpec`): a and every column of B are sorted
|N(0, sigma)| draws with the top two entries made nearly equal, plus the offset; every row
of C a sorted |N(0, sigma_c)| draw. With c = m = 1 the draws are those of
:func:`auditor.ssm.init_params` for the same seed.

The ``ssm`` built-in (:mod:`auditor.models`) audits such sets with this module, trained
by :class:`auditor.torch_model.TorchModel` with the student's own optimizer and stopping
rule (normalized gradient descent, ``TrainConfig``'s lr, eps and extra steps), so every
trial's model is the single-channel student's, widened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from auditor.ssm import SSMSpec, powers
from auditor.train import TrainConfig


class MimoSSM(nn.Module):
    """Eq. (1): x (batch, K, c) -> y_hat (batch, m), any length K.

    Parameters
    ----------
    a : tensor (d,), the diagonal of A
    b : tensor (d, c)
    c : tensor (m, d)
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor):
        super().__init__()
        if a.ndim != 1 or b.shape[0] != a.shape[0] or c.shape[1] != a.shape[0]:
            raise ValueError(f"need a (d,), b (d, c), c (m, d); got {tuple(a.shape)}, {tuple(b.shape)}, "
                             f"{tuple(c.shape)}")
        self.a = nn.Parameter(a.clone())                                    # (d,)
        self.b = nn.Parameter(b.clone())                                    # (d, c)
        self.c = nn.Parameter(c.clone())                                    # (m, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. (2) for every sequence of ``x`` (batch, K, c): (batch, m)."""
        K = x.shape[1]
        u = x.flip(1) @ self.b.T                                            # (batch, K, d): B u_{K-j}
        h = (u * powers(self.a, K).T).sum(1)                                # (batch, d): h_K = sum_j A^j B u_{K-j}
        return h @ self.c.T                                                 # (batch, m): C h_K


def init_mimo(spec: SSMSpec, seed: int, *, channels: int, outputs: int) -> dict[str, torch.Tensor]:
    """One model's start, float64 on the CPU: a (d,), b (d, channels), c (outputs, d).

    The draws of :func:`auditor.ssm.init_params` (``init="torch"``), from a generator
    seeded with ``seed``, in the order a, the columns of B, the rows of C; with one channel
    and one output they are that function's draws exactly.
    """
    if spec.is_network or spec.init != "torch":
        raise ValueError("the multi-channel student is the standalone SSM with torch init")
    gen = torch.Generator().manual_seed(seed)
    d = spec.state_dim
    near = 0.05 * math.exp(-spec.gap * math.log10(1.0 / spec.sigma_a)) if spec.gap else None

    def sorted_abs(sigma: float) -> torch.Tensor:
        v = (torch.randn(d, generator=gen, dtype=torch.float64) * sigma).abs().sort(descending=True).values
        if near is not None and d > 1:
            v[1] = v[0] - near
        return v                                                            # (d,)

    a = sorted_abs(spec.sigma_a) + spec.offset                              # (d,)
    b = torch.stack([sorted_abs(spec.sigma_b) + spec.offset for _ in range(channels)], dim=1)   # (d, c)
    c = torch.stack([(torch.randn(d, generator=gen, dtype=torch.float64) * spec.sigma_c)
                     .abs().sort(descending=True).values for _ in range(outputs)])              # (m, d)
    return {"a": a, "b": b, "c": c}


@dataclass(frozen=True)
class MimoFactory:
    """``seed -> MimoSSM`` for :class:`auditor.torch_model.TorchModel` (picklable, for the workers)."""

    spec: SSMSpec
    channels: int
    outputs: int

    def __call__(self, seed: int) -> MimoSSM:
        return MimoSSM(**init_mimo(self.spec, seed, channels=self.channels, outputs=self.outputs))


# Screens whose scores order the search. The single-channel student's mechanism screens
# (gamma0, trace_push) read its closed form; here the generic ones order it, with the
# model-blind isolation forest as a third view (each example's highest rank counts, so the
# search puts back what only one view finds odd). Measured on the benchmark (n = 60, 6
# poisons, c = 3): loss_trajectory and gradient_norm ranked the poisons with AUROC 0.70-0.87
# and left one beyond every prefix the search removes (m = 2, seed 1: nothing found, 18
# models); with the isolation forest (AUROC 0.98-0.99) all 6 were found, nothing else.
# Its order alone is not trusted: the decoys of auditor.benchmarks fool it.
ORDERING = ("loss_trajectory", "gradient_norm", "isolation_forest")


def mimo_model(spec: SSMSpec, train: TrainConfig, *, channels: int, outputs: int):
    """The :class:`auditor.torch_model.TorchModel` that trains eq. (1) as ``train`` trains the
    single-channel student: normalized gradient descent (``train.optimizer`` must be "gd")
    with its lr and EMA factor, until the loss is at most ``train.eps`` above the subset's
    noise floor (as :func:`auditor.train.train_many`), then
    ``train.extra_steps`` more updates, at most ``train.max_steps``; the search is ordered by
    :data:`ORDERING`."""
    from auditor.torch_model import TorchModel

    if train.optimizer != "gd":
        raise ValueError(f"the multi-channel student trains by normalized gradient descent, not {train.optimizer}")
    return TorchModel(MimoFactory(spec, channels, outputs), loss="mse", optimizer="ngd", lr=train.lr,
                      ngd_beta=train.beta, stop_loss=train.eps, stop_above_floor=True, extra_steps=train.extra_steps,
                      steps=train.max_steps, ordering=ORDERING)
