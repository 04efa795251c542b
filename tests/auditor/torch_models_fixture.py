"""Small PyTorch models for the TorchModel tests (importable, so their problems pickle)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyMLP(nn.Module):
    """Flattened sequence -> tanh hidden layer -> outputs."""

    def __init__(self, length: int = 6, channels: int = 1, hidden: int = 8, outputs: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(length * channels, hidden), nn.Tanh(),
                                 nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DiagonalSSM(nn.Module):
    """The paper's standalone diagonal SSM: y = sum_j C A^j B x_{k-j}, near-zero init."""

    def __init__(self, seed: int, state_dim: int = 10, sigma: float = 1e-3, offset: float = 0.1, gap: float = 5.0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        near = 0.05 * math.exp(-gap * math.log10(1.0 / sigma))

        def sorted_abs() -> torch.Tensor:
            v = (torch.randn(state_dim, generator=gen, dtype=torch.float64) * sigma).abs().sort(descending=True).values
            v[1] = v[0] - near
            return v

        self.a = nn.Parameter(sorted_abs() + offset)
        self.b = nn.Parameter(sorted_abs() + offset)
        self.c = nn.Parameter((torch.randn(state_dim, generator=gen, dtype=torch.float64) * sigma)
                              .abs().sort(descending=True).values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x[..., 0].flip(-1)                                     # (batch, k), most recent first
        j = torch.arange(u.shape[-1], dtype=u.dtype, device=u.device)
        kappa = (self.c * self.b) @ (self.a[:, None] ** j)         # (k,): C A^j B
        return (u @ kappa)[:, None]


def mlp(seed: int) -> TinyMLP:
    return TinyMLP()


def classifier(seed: int) -> TinyMLP:
    return TinyMLP(outputs=3)


def ssm(seed: int) -> DiagonalSSM:
    return DiagonalSSM(seed)
