"""Diagonal SISO state-space models, alone or inside a ReLU network, for many models at once.

A diagonal SSM of state dimension d reads a sequence x_1..x_K and reports the last output

    h_t = A h_{t-1} + B x_t,      y_hat = C h_K                                   (1)

which is the convolution  y_hat = sum_{j=1..K} kappa_j x_{K-j+1}  with the impulse response

    kappa_j = C A^(j-1) B = sum_i c_i b_i a_i^(j-1)          (A = diag(a))          (2)

(Slutzky et al., arXiv 2410.10473, Sec. 2). Setting C of the paper puts the SSM in front
of a bias-free ReLU network:  y_hat = W3 relu(W2 relu(W1 s)),  s the SSM output (1).

Parameters of M models are stacked along a leading axis, so one call evaluates all of
them: ``a, b, c`` have shape (M, d); ``w1`` (M, width, 1), ``w2`` (M, width, width),
``w3`` (M, 1, width). Every model's initial parameters are drawn from its own seeded
generator on the CPU in float64, so a model's start does not depend on which batch, device
or dtype it is trained in. ``SSMSpec(init="keras")`` instead draws the paper's own starts:
the stream and layout of the authors' Keras initializers (see :func:`init_params`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from auditor.tf_random import stateless_normal

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SSMSpec:
    """Architecture and initialization of a student model.

    Attributes
    ----------
    state_dim : int
        d, the SSM state dimension.
    sigma_a, sigma_b, sigma_c : float
        Standard deviations of the N(0, sigma) draws for a, b and c.
    offset : float
        Added to a and b after the draw (setting B uses 0.1, setting C 0).
    gap : float
        The top two entries of a (and of b) are made nearly equal:
        second = first - 0.05 * exp(-gap * log10(1 / sigma_a)) (paper's init; 0 disables it).
    width : int
        0 for a standalone SSM; otherwise the width of the two hidden ReLU layers.
    sigma_mlp : float
        Standard deviation of the MLP weights.
    init : "torch" or "keras"
        Where the random draws come from: a ``torch.Generator`` per model, or the stream
        and layout of the authors' Keras initializers (:func:`_keras_init_one`).
    """

    state_dim: int
    sigma_a: float = 1e-3
    sigma_b: float = 1e-3
    sigma_c: float = 1e-3
    offset: float = 0.1
    gap: float = 5.0
    width: int = 0
    sigma_mlp: float = 0.03
    init: Literal["torch", "keras"] = "torch"

    @property
    def is_network(self) -> bool:
        return self.width > 0

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("a", "b", "c", "w1", "w2", "w3") if self.is_network else ("a", "b", "c")


def init_params(spec: SSMSpec, seeds, *, dtype=torch.float64, device="cpu") -> Params:
    """Initial parameters of one model per seed, stacked: a, b, c (M, d), MLP weights.

    a, b and c are |N(0, sigma)| draws sorted in descending order; the top two entries of
    a and of b are set nearly equal (``spec.gap``), then ``spec.offset`` is added to a and
    b (setting B of the paper). The MLP weights are N(0, sigma_mlp).
    """
    init_one = _keras_init_one if spec.init == "keras" else _init_one
    per_model = [init_one(spec, int(s)) for s in seeds]
    return {name: torch.stack([p[name] for p in per_model]).to(device=device, dtype=dtype)
            for name in spec.param_names}


def _init_one(spec: SSMSpec, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed)
    d = spec.state_dim
    f64 = torch.float64
    near = 0.05 * math.exp(-spec.gap * math.log10(1.0 / spec.sigma_a)) if spec.gap else None

    def sorted_abs(sigma: float) -> torch.Tensor:
        v = (torch.randn(d, generator=gen, dtype=f64) * sigma).abs().sort(descending=True).values
        if near is not None and d > 1:
            v[1] = v[0] - near
        return v

    params = {"a": sorted_abs(spec.sigma_a) + spec.offset,
              "b": sorted_abs(spec.sigma_b) + spec.offset,
              "c": (torch.randn(d, generator=gen, dtype=f64) * spec.sigma_c).abs().sort(descending=True).values}
    if spec.is_network:
        w = spec.width
        params["w1"] = torch.randn(w, 1, generator=gen, dtype=f64) * spec.sigma_mlp
        params["w2"] = torch.randn(w, w, generator=gen, dtype=f64) * spec.sigma_mlp
        params["w3"] = torch.randn(1, w, generator=gen, dtype=f64) * spec.sigma_mlp
    return params


def _keras_init_one(spec: SSMSpec, seed: int) -> Params:
    """One model's start as the authors' Keras code draws it (TensorFlow 2.4, float32).

    Every layer's seeded ``RandomNormal`` initializer draws the same stream z of
    ``tf.random.stateless_normal(shape, seed=[seed, 0])``, each in its own shape: B is
    sigma_b z[:d] (kernel (1, d)), C sigma_c z[:d] (kernel (d, 1)), A's diagonal sigma_a
    z[i (d + 1)] (recurrent kernel (d, d)), and the MLP kernels sigma_mlp z in shapes (1, w),
    (w, w) and (w, 1). The authors' post-processing then sorts |a| and |b| in descending
    order, reverses |c| (``np.flip(np.sort(.))`` on a (d, 1) column sorts nothing and flips
    the rows), makes the top two entries of a and b nearly equal and adds the offset to a
    and b. Dense kernels act as x @ W, so w2 here is the transpose of the Keras kernel.
    """
    d, w = spec.state_dim, spec.width
    z = stateless_normal(max(d * d, w * w, w, d), seed=(seed, 0))              # float32
    near = 0.05 * math.exp(-spec.gap * math.log10(1.0 / spec.sigma_a)) if spec.gap else 0.0

    def desc_abs(v: np.ndarray) -> np.ndarray:
        v = np.sort(np.abs(v))[::-1].copy()
        if spec.gap and d > 1:
            v[1] = np.float32(v[0] - near)
        return np.float32(v.astype(np.float64) + spec.offset)          # float64 sum, as in NumPy 1.19

    f32 = np.float32
    params = {"a": desc_abs(f32(spec.sigma_a) * z[::d + 1][:d]),
              "b": desc_abs(f32(spec.sigma_b) * z[:d]),
              "c": np.abs(f32(spec.sigma_c) * z[:d])[::-1]}
    if spec.is_network:
        mlp = f32(spec.sigma_mlp) * z
        params |= {"w1": mlp[:w].reshape(w, 1), "w2": mlp[:w * w].reshape(w, w).T, "w3": mlp[:w].reshape(1, w)}
    return {k: torch.tensor(np.ascontiguousarray(v), dtype=torch.float64) for k, v in params.items()}


def powers(a: torch.Tensor, horizon: int) -> torch.Tensor:
    """a_i^j for j = 0..horizon-1: (M, d) -> (M, d, horizon), by cumulative product."""
    ones = torch.ones_like(a).unsqueeze(-1)                                  # (M, d, 1)
    if horizon == 1:
        return ones
    rest = a.unsqueeze(-1).expand(*a.shape, horizon - 1)                    # (M, d, J-1)
    return torch.cat([ones, torch.cumprod(rest, dim=-1)], dim=-1)           # (M, d, J)


def impulse_response(params: Params, horizon: int) -> torch.Tensor:
    """kappa_1..kappa_J of eq. (2): (M, J). Column j holds kappa_{j+1}."""
    cb = (params["c"] * params["b"]).unsqueeze(-1)                           # (M, d, 1)
    return (cb * powers(params["a"], horizon)).sum(dim=-2)                   # (M, J)


def reverse_time(x: torch.Tensor) -> torch.Tensor:
    """x_{K-j} for j = 0..K-1, the layout eq. (2) pairs with kappa: (n, K) -> (n, K)."""
    return torch.flip(x, dims=(-1,))


def ssm_output(params: Params, x_rev: torch.Tensor) -> torch.Tensor:
    """The SSM's last output, eq. (1)-(2), for every model and sequence: (M, n).

    ``x_rev`` is the time-reversed input (n, K) of :func:`reverse_time`; sequences of any
    length K are accepted (extrapolation beyond the training length).
    """
    kappa = impulse_response(params, x_rev.shape[-1])                        # (M, K)
    return kappa @ x_rev.T                                                   # (M, n)


def forward(params: Params, x_rev: torch.Tensor) -> torch.Tensor:
    """Model output for every model and sequence: (M, n). The MLP is applied if present."""
    s = ssm_output(params, x_rev)                                            # (M, n)
    if "w1" not in params:
        return s
    z1 = torch.relu(params["w1"] @ s.unsqueeze(1))                          # (M, width, n)
    z2 = torch.relu(params["w2"] @ z1)                                       # (M, width, n)
    return (params["w3"] @ z2).squeeze(1)                                    # (M, n)


def teacher_params(*, state_dim: int = 1, width: int = 0, out_weight: float = 0.5,
                   dtype=torch.float64) -> Params:
    """The paper's teachers as a batch of one model.

    ``state_dim == 1``: A = B = C = 1, impulse response all ones (settings B, C); with
    ``width`` the MLP has first-layer weights 1, identity second layer and output weights
    ``out_weight`` (setting C: y = width * out_weight * relu(sum_t x_t)).
    ``state_dim == d > 1``: A* = diag(1, 0), B* = C*^T = (1, sqrt(d - 1)), impulse response
    (d, 1, 1, ...) (setting A).
    """
    if state_dim == 1:
        a = b = c = torch.ones(1, 1, dtype=dtype)
    else:
        a = torch.tensor([[1.0, 0.0]], dtype=dtype)
        b = c = torch.tensor([[1.0, math.sqrt(state_dim - 1)]], dtype=dtype)
    params = {"a": a, "b": b, "c": c}
    if width:
        params["w1"] = torch.ones(1, width, 1, dtype=dtype)
        params["w2"] = torch.eye(width, dtype=dtype).unsqueeze(0)
        params["w3"] = torch.full((1, 1, width), out_weight, dtype=dtype)
    return params
