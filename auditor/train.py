"""Training students: one model, many models at once, and gradient flow.

All trainers minimise the weighted mean squared error of each model on its own subset:

    L_m = sum_n w_mn (y_hat_mn - y_n)^2 / sum_n w_mn                                 (3)

where w_m in {0, 1}^n is the model's mask over the n training examples. A model's stopping
rule is the paper's, measured above the noise floor: train until L_m <= eps + F_m, then
``extra_steps`` more updates (the update made at the step that first reaches the threshold
counts as the first of them), or stop after ``max_steps`` updates without converging. F_m is
the least loss (3) any linear function of the sequence reaches on the model's subset
(:func:`linear_floor`): 0 where the labels are a linear function of the inputs, as the
paper's are, so the rule is then exactly the paper's; with noisy labels it is about the
noise's variance, which no model that generalizes fits below.

:func:`train_many` trains M models (masks x seeds) in one vectorized computation with the
closed-form gradient of eq. (2) for the standalone SSM and autograd for the network.
:func:`train_one` trains a single model by the textbook route (autograd; torch.optim.Adam,
or the Keras variant written out) and is the reference that ``train_many`` is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from auditor.ssm import Params, SSMSpec, forward, init_params, reverse_time


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and stopping rule.

    Attributes
    ----------
    optimizer : "gd" or "adam"
        "gd" is the paper's full-batch gradient descent with a normalized step (setting B):
        lr_t = lr / (sqrt(EMA_beta(g) / (1 - beta^t)) + 1e-6), g = sum of the parameter
        gradient norms. "adam" is Adam (setting C).
    lr : float
        Base step size.
    eps : float
        Train loss above the subset's noise floor (:func:`linear_floor`) at or below which
        the extra steps begin.
    extra_steps : int
        Updates made after the loss first reaches ``eps``.
    max_steps : int
        Most updates a model gets.
    beta : float
        EMA factor of the normalized step.
    betas, adam_eps : Adam's moment factors and denominator constant.
    adam_eps_style : "torch" or "keras"
        Where Adam adds ``adam_eps``: "torch" (PyTorch) to the bias-corrected sqrt(v_hat);
        "keras" (TensorFlow/Keras, used by the paper's setting C, eps 1e-7) to the raw
        sqrt(v), with the bias corrections folded into the step size. The two differ most
        while the gradients are tiny, i.e. right after a near-zero init, and that decides
        whether Adam keeps the greedy low-rank growth of A.
    """

    optimizer: Literal["gd", "adam"] = "gd"
    lr: float = 0.01
    eps: float = 0.01
    extra_steps: int = 1500
    max_steps: int = 100_000
    beta: float = 0.8
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    adam_eps_style: Literal["torch", "keras"] = "torch"

    @classmethod
    def fixed(cls, steps: int, **kwargs) -> "TrainConfig":
        """Exactly ``steps`` updates for every model (the stopping rule never fires)."""
        return cls(eps=-math.inf, extra_steps=0, max_steps=steps, **kwargs)


@dataclass
class TrainResult:
    """Trained models, stacked along the first axis (on the CPU).

    Attributes
    ----------
    params : dict of tensors, (M, ...)
    loss : tensor (M,)
        Final train loss (3) of each model on its own subset.
    steps : tensor (M,) int
        Updates each model made.
    converged : tensor (M,) bool
        Whether the loss reached ``eps`` above the noise floor within ``max_steps``.
    """

    params: Params
    loss: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    meta: dict = field(default_factory=dict)
    trajectory: list[Params] = field(default_factory=list)
    """Parameters of all M models every ``record_every`` steps (step 0 first), if asked."""

    def model(self, m: int) -> Params:
        """Parameters of model m as a batch of one."""
        return {k: v[m:m + 1] for k, v in self.params.items()}


# --------------------------------------------------------------------------- losses


def linear_floor(x, y, masks) -> np.ndarray:
    """The least loss (3) that any linear function of the sequence reaches on each subset.

    F_m = min_beta sum_n w_mn (beta . x_n - y_n)^2 / sum_n w_mn, by least squares in float64
    (residuals computed, not taken from the solver, so that rank-deficient subsets, e.g. fewer
    examples than positions, give their exact 0).

    Both students' functions include every linear function of the sequence (the SSM's output
    is sum_t C A^t B x_{K-1-t}, any kernel of length K <= d with distinct diagonal entries of
    A; the network's bias-free ReLU MLP carries z as relu(z) - relu(-z)), so F_m is a loss a
    model can reach, and where the labels are a linear function of the inputs it is 0 and
    the stopping rule is the paper's. With label noise of variance s^2, F_m is about
    s^2 (1 - K / |S_m|): a threshold ``eps`` below it is never reached by a model that does
    not memorize the noise (measured before the floor existed: noise of 10% of the labels' sd
    left most of an audit's models unconverged).

    Parameters
    ----------
    x : array (n, K) or (n, K, c); y : array (n,) or (n, m) (the loss is then the mean
        over the outputs too); masks : array (M, n) of 0/1

    Returns
    -------
    ndarray (M,)
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    masks = np.asarray(masks).astype(bool)
    unique, inverse = np.unique(masks, axis=0, return_inverse=True)
    floors = np.empty(len(unique))
    for u, keep in enumerate(unique):
        if not keep.any():
            floors[u] = 0.0
            continue
        xs, ys = x[keep], y[keep]
        beta = np.linalg.lstsq(xs, ys, rcond=None)[0]
        floors[u] = float(np.mean((xs @ beta - ys) ** 2))
    return floors[np.asarray(inverse).reshape(-1)]


def weighted_mse(y_hat: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. (3): (M, n), (n,), (M, n) -> (M,)."""
    return ((y_hat - y) ** 2 * w).sum(-1) / w.sum(-1)


def ssm_loss_and_grad(params: Params, x_rev: torch.Tensor, y: torch.Tensor,
                      w: torch.Tensor) -> tuple[torch.Tensor, Params]:
    """Loss (3) of M standalone SSMs and its gradient in closed form: (M,), params (M, d).

    With kappa_j = sum_i c_i b_i a_i^j (2), y_hat = kappa x_rev^T, the residual weight
    r_n = 2 w_n (y_hat_n - y_n) / sum(w) and G_j = dL/dkappa_j = sum_n r_n x_rev_nj:

        dL/dc_i = b_i sum_j G_j a_i^j,   dL/db_i = c_i sum_j G_j a_i^j,
        dL/da_i = c_i b_i sum_{j>=1} j G_j a_i^(j-1).
    """
    batch = _Batch.of(x_rev, y, w)
    loss, grads = _ssm_grad_last({k: params[k].T.contiguous() for k in ("a", "b", "c")}, batch)
    return loss, {k: g.T for k, g in grads.items()}


def _ssm_grad_last(p: Params, batch: "_Batch") -> tuple[torch.Tensor, Params]:
    """:func:`ssm_loss_and_grad` on parameters laid out (d, M), the model axis innermost.

    Every contraction over d or K is then a vectorized pass over M contiguous values, the
    two contractions with the data are ordinary matrix products, and the sums over powers
    of a use Horner's rule, so no (K, d, M) tensor of powers is formed.
    """
    a, b, c = p["a"], p["b"], p["c"]                                         # (d, M)
    x_rev = batch.x_rev
    K = x_rev.shape[-1]
    cb = c * b                                                               # (d, M)
    kappa = torch.empty((K, a.shape[1]), dtype=a.dtype, device=a.device)     # (K, M), eq. (2)
    power = cb
    for j in range(K):
        torch.sum(power, 0, out=kappa[j])
        if j + 1 < K:
            power = power * a
    res = x_rev @ kappa - batch.y[:, None]                                   # (n, M)
    wres = batch.w_t * res
    loss = (wres * res).sum(0) / batch.wsum                                  # (M,), eq. (3)
    G = (x_rev.T @ wres) * (2.0 / batch.wsum)                                # (K, M)
    PG = G[K - 1].expand_as(a)                                               # sum_j G_j a^j
    dP = ((K - 1) * G[K - 1]).expand_as(a) if K > 1 else torch.zeros_like(a)  # sum_j j G_j a^(j-1)
    for j in range(K - 2, -1, -1):
        PG = torch.addcmul(G[j], PG, a)
        if j >= 1:
            dP = torch.addcmul(j * G[j], dP, a)
    return loss, {"a": cb * dP, "b": c * PG, "c": b * PG}


def autograd_loss_and_grad(params: Params, x_rev: torch.Tensor, y: torch.Tensor,
                           w: torch.Tensor) -> tuple[torch.Tensor, Params]:
    """Loss (3) of M models of any architecture and its gradient by autograd.

    The models are independent, so the gradient of the summed loss with respect to the
    stacked parameters holds each model's own gradient.
    """
    names = list(params)
    leaves = [params[k].detach().requires_grad_(True) for k in names]
    with torch.enable_grad():
        loss = weighted_mse(forward(dict(zip(names, leaves)), x_rev), y, w)   # (M,)
        grads = torch.autograd.grad(loss.sum(), leaves)
    return loss.detach(), dict(zip(names, grads))


@dataclass
class _Batch:
    """The training data of a batch of models: x_rev (n, K), y (n,), masks both ways."""

    x_rev: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor                      # (M, n)
    w_t: torch.Tensor                    # (n, M), contiguous
    wsum: torch.Tensor                   # (M,)

    @classmethod
    def of(cls, x_rev: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> "_Batch":
        return cls(x_rev, y, w, w.T.contiguous(), w.sum(-1))

    def take(self, keep: torch.Tensor) -> "_Batch":
        return _Batch.of(self.x_rev, self.y, self.w[keep])


class _ModelFirst:
    """Parameters stacked as (M, ...): any architecture, gradients by autograd."""

    @staticmethod
    def internal(t: torch.Tensor) -> torch.Tensor:
        return t

    @staticmethod
    def external(t: torch.Tensor) -> torch.Tensor:
        return t

    @staticmethod
    def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t[idx]

    @staticmethod
    def norm(g: torch.Tensor) -> torch.Tensor:
        return g.flatten(1).norm(dim=1)

    @staticmethod
    def per_model(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (like.ndim - 1)))

    @staticmethod
    def grad(params: Params, batch: _Batch) -> tuple[torch.Tensor, Params]:
        return autograd_loss_and_grad(params, batch.x_rev, batch.y, batch.w)


class _ModelLast(_ModelFirst):
    """Standalone-SSM parameters laid out (d, M), gradients in closed form."""

    @staticmethod
    def internal(t: torch.Tensor) -> torch.Tensor:
        return t.T.contiguous()

    @staticmethod
    def external(t: torch.Tensor) -> torch.Tensor:
        return t.T

    @staticmethod
    def take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t[:, idx]

    @staticmethod
    def norm(g: torch.Tensor) -> torch.Tensor:
        return (g * g).sum(0).sqrt()             # 20x faster than g.norm(dim=0) on CPU

    @staticmethod
    def per_model(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v

    grad = staticmethod(_ssm_grad_last)


# --------------------------------------------------------------------------- many models


def train_many(spec: SSMSpec, x, y, masks, seeds, config: TrainConfig, *,
               dtype=torch.float64, device="cpu", init: Params | None = None,
               record_every: int = 0) -> TrainResult:
    """Train M models at once, model m on the examples ``masks[m]`` from seed ``seeds[m]``.

    Parameters
    ----------
    spec : SSMSpec
        Architecture and initialization.
    x : array (n, K)
        Training sequences. y : array (n,) targets.
    masks : array (M, n) of 0/1 (or bool)
        Which examples each model trains on; every row needs at least one 1.
    seeds : sequence of M ints
        Seed of each model's initialization.
    config : TrainConfig
    dtype, device : torch dtype and device of the computation.
    init : dict of tensors, optional
        Initial parameters (M, ...) instead of ``init_params(spec, seeds)``.
    record_every : int
        If positive, keep a copy of every model's parameters each ``record_every`` steps
        (models that are done keep their final parameters in later snapshots).

    Returns
    -------
    TrainResult
        Model m of the result equals :func:`train_one` with ``masks[m]`` and ``seeds[m]``.
    """
    x_rev, y_t = _prepare(x, y, dtype=dtype, device=device)
    w = torch.as_tensor(np.asarray(masks), dtype=dtype, device=device)            # (M, n)
    M = w.shape[0]
    if w.ndim != 2 or w.shape[1] != x_rev.shape[0]:
        raise ValueError(f"masks must have shape (M, {x_rev.shape[0]}), got {tuple(w.shape)}")
    if len(seeds) != M:
        raise ValueError(f"{M} masks but {len(seeds)} seeds")
    if (w.sum(-1) <= 0).any():
        raise ValueError("every mask must keep at least one example")
    start = init_params(spec, seeds, dtype=dtype, device=device) if init is None else \
        {k: v.to(device=device, dtype=dtype).clone() for k, v in init.items()}
    layout = _ModelFirst if spec.is_network else _ModelLast
    params = {k: layout.internal(v) for k, v in start.items()}
    batch = _Batch.of(x_rev, y_t, w)
    step_fn = _optimizer(config, params, layout)

    out = {k: v.clone() for k, v in start.items()}                                # final params (M, ...)
    steps_out = torch.zeros(M, dtype=torch.long, device=device)
    converged_out = torch.zeros(M, dtype=torch.bool, device=device)
    live = torch.arange(M, device=device)                                         # models still in the batch
    reached = torch.zeros(M, dtype=torch.bool, device=device)
    remaining = torch.full((M,), config.extra_steps, dtype=torch.long, device=device)
    threshold = config.eps + torch.as_tensor(linear_floor(x, y, masks), dtype=dtype, device=device)   # (M,)
    n_updates = torch.zeros(M, dtype=torch.long, device=device)
    check_every = 1 if torch.device(device).type == "cpu" else 32

    def retire(sel: torch.Tensor) -> None:
        idx = live[sel]
        for k in out:
            out[k][idx] = layout.external(layout.take(params[k], sel))
        steps_out[idx] = n_updates[sel]
        converged_out[idx] = reached[sel]

    trajectory: list[Params] = []

    def snapshot() -> None:
        full = {k: v.clone() for k, v in out.items()}
        for k in full:
            full[k][live] = layout.external(params[k])
        trajectory.append({k: v.cpu() for k, v in full.items()})

    for t in range(1, config.max_steps + 1):
        if record_every and (t - 1) % record_every == 0:
            snapshot()
        loss, grads = layout.grad(params, batch)
        reached |= loss <= threshold
        done = reached & (remaining <= 0)
        if t % check_every == 0:
            n_done = int(done.sum())
            if n_done == live.numel():
                break
            if n_done and n_done * 8 >= live.numel():                              # compact the batch
                retire(done)
                keep = ~done
                live, reached, remaining, n_updates, done, threshold = (
                    live[keep], reached[keep], remaining[keep], n_updates[keep], done[keep], threshold[keep])
                batch = batch.take(keep)
                params = {k: layout.take(v, keep) for k, v in params.items()}
                grads = {k: layout.take(v, keep) for k, v in grads.items()}
                step_fn.keep(keep)
        active = ~done
        step_fn(params, grads, t, active.to(dtype))
        n_updates += active
        remaining -= (reached & active).long()
    retire(torch.ones_like(live, dtype=torch.bool))

    final_loss = weighted_mse(forward(out, x_rev), y_t,
                              torch.as_tensor(np.asarray(masks), dtype=dtype, device=device))
    return TrainResult(params={k: v.cpu() for k, v in out.items()}, loss=final_loss.cpu(),
                       steps=steps_out.cpu(), converged=converged_out.cpu(),
                       meta={"device": str(device), "dtype": str(dtype).removeprefix("torch.")},
                       trajectory=trajectory)


class _NormalizedGD:
    """The paper's normalized step for M models: lr_t = lr / (sqrt(EMA(g)/(1-beta^t)) + 1e-6)."""

    def __init__(self, config: TrainConfig, params: Params, layout):
        self.lr, self.beta, self.layout = config.lr, config.beta, layout
        first = next(iter(params.values()))
        self.ema = torch.zeros_like(layout.norm(first))                             # (M,)

    def __call__(self, params: Params, grads: Params, t: int, active: torch.Tensor) -> None:
        gnorm = sum(self.layout.norm(g) for g in grads.values())                    # (M,)
        self.ema.mul_(self.beta).add_(gnorm, alpha=1 - self.beta)
        lr = self.lr / (torch.sqrt(self.ema / (1 - self.beta ** t)) + 1e-6) * active   # (M,)
        for k, g in grads.items():
            params[k].sub_(self.layout.per_model(lr, g) * g)

    def keep(self, keep: torch.Tensor) -> None:
        self.ema = self.ema[keep]


class _Adam:
    """Adam for M stacked models, in torch.optim.Adam's (or Keras') arithmetic order."""

    def __init__(self, config: TrainConfig, params: Params, layout):
        self.lr, (self.b1, self.b2), self.eps = config.lr, config.betas, config.adam_eps
        self.layout = layout
        self.keras = config.adam_eps_style == "keras"
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    def __call__(self, params: Params, grads: Params, t: int, active: torch.Tensor) -> None:
        bc2_sqrt = math.sqrt(1 - self.b2 ** t)
        step_size = self.lr * (bc2_sqrt if self.keras else 1.0) / (1 - self.b1 ** t)
        for k, g in grads.items():
            self.m[k].lerp_(g, 1 - self.b1)
            self.v[k].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (self.v[k].sqrt() if self.keras else self.v[k].sqrt() / bc2_sqrt).add_(self.eps)
            scale = self.layout.per_model(active * -step_size, g)
            params[k].add_(scale * self.m[k] / denom)

    def keep(self, keep: torch.Tensor) -> None:
        self.m = {k: self.layout.take(v, keep) for k, v in self.m.items()}
        self.v = {k: self.layout.take(v, keep) for k, v in self.v.items()}


def _optimizer(config: TrainConfig, params: Params, layout):
    if config.optimizer == "gd":
        return _NormalizedGD(config, params, layout)
    if config.optimizer == "adam":
        return _Adam(config, params, layout)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _prepare(x, y, *, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    y_t = torch.as_tensor(np.asarray(y), dtype=dtype, device=device)
    if x_t.ndim != 2 or y_t.shape != (x_t.shape[0],):
        raise ValueError(f"expected x (n, K) and y (n,), got {tuple(x_t.shape)} and {tuple(y_t.shape)}")
    return reverse_time(x_t), y_t


# --------------------------------------------------------------------------- one model


def train_one(spec: SSMSpec, x, y, mask, seed: int, config: TrainConfig, *,
              dtype=torch.float64, device="cpu") -> TrainResult:
    """Train one model on the examples ``mask`` from ``seed``: the plain autograd loop.

    Returns a :class:`TrainResult` holding one model (M = 1).
    """
    x_rev, y_t = _prepare(x, y, dtype=dtype, device=device)
    keep = torch.as_tensor(np.asarray(mask), device=device).bool()
    x_rev, y_t = x_rev[keep], y_t[keep]
    threshold = config.eps + float(linear_floor(x, y, np.asarray(mask)[None])[0])
    start = init_params(spec, [seed], dtype=dtype, device=device)
    params = {k: v[0].clone().requires_grad_(True) for k, v in start.items()}

    def loss_fn() -> torch.Tensor:
        y_hat = forward({k: v.unsqueeze(0) for k, v in params.items()}, x_rev)[0]     # (n,)
        return ((y_hat - y_t) ** 2).mean()

    adam = (torch.optim.Adam(params.values(), lr=config.lr, betas=config.betas, eps=config.adam_eps)
            if config.optimizer == "adam" and config.adam_eps_style == "torch" else None)
    moments = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
    ema, reached, remaining, steps = 0.0, False, config.extra_steps, 0
    for t in range(1, config.max_steps + 1):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, list(params.values()))
        reached = reached or loss.item() <= threshold
        if reached and remaining <= 0:
            break
        with torch.no_grad():
            if adam is not None:
                for p, g in zip(params.values(), grads):
                    p.grad = g
                adam.step()
            elif config.optimizer == "adam":                 # Keras: eps on the raw sqrt(v)
                b1, b2 = config.betas
                lr_t = config.lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                for (p, g), (m, v) in zip(zip(params.values(), grads), moments.values()):
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).add_(g * g, alpha=1 - b2)
                    p.sub_(lr_t * m / (v.sqrt() + config.adam_eps))
            else:
                ema = config.beta * ema + (1 - config.beta) * sum(g.norm() for g in grads)
                lr = config.lr / (torch.sqrt(ema / (1 - config.beta ** t)) + 1e-6)
                for p, g in zip(params.values(), grads):
                    p.sub_(lr * g)
        steps += 1
        remaining -= int(reached)
    with torch.no_grad():
        final = loss_fn().reshape(1)
    return TrainResult(params={k: v.detach().unsqueeze(0).cpu() for k, v in params.items()},
                       loss=final.cpu(), steps=torch.tensor([steps]),
                       converged=torch.tensor([reached]),
                       meta={"device": str(device), "dtype": str(dtype).removeprefix("torch.")})


# --------------------------------------------------------------------------- gradient flow


def gradient_flow(a0: np.ndarray, x: np.ndarray, y: np.ndarray, *, t_max: float = 1e18,
                  rtol: float = 1e-10, atol: float = 1e-16,
                  loss_tol: float = 1e-14) -> tuple[np.ndarray, dict]:
    """Gradient flow da/dt = -dL/da of setting A (B = C^T = ones, only diag(A) trained).

    Integrated with LSODA (it switches between stiff and non-stiff steps: the flow is
    a^(K-2)-slow near zero, then fast) with a tight absolute tolerance, which keeps the
    ~1e-8 separation of the top two entries in the paper's init resolved. Stops when the
    loss falls below ``loss_tol`` (the flow has converged) or at ``t_max``.

    Parameters
    ----------
    a0 : array (d,), positive initial diagonal.
    x : array (n, K), y : array (n,).

    Returns
    -------
    a : array (d,), the diagonal at the end.
    info : dict with the final ``loss``, time ``t`` and solver ``status``.
    """
    from scipy.integrate import solve_ivp

    x_rev = np.asarray(x, dtype=np.float64)[:, ::-1]                              # (n, K)
    y = np.asarray(y, dtype=np.float64)
    n, K = x_rev.shape
    j = np.arange(K)

    def loss_grad(a: np.ndarray) -> tuple[float, np.ndarray]:
        P = a[:, None] ** j                                                       # (d, K)
        res = P.sum(0) @ x_rev.T - y                                              # (n,)
        G = (2.0 / n) * res @ x_rev                                               # (K,)
        dP = (P[:, :K - 1] * (j[1:] * G[1:])).sum(-1)                             # (d,)
        return float(res @ res / n), dP

    def rhs(_, a):
        return -loss_grad(a)[1]

    def converged(_, a):
        return loss_grad(a)[0] - loss_tol
    converged.terminal = True

    sol = solve_ivp(rhs, (0.0, t_max), np.asarray(a0, dtype=np.float64), method="LSODA",
                    rtol=rtol, atol=atol, events=converged)
    a = sol.y[:, -1]
    return a, {"loss": loss_grad(a)[0], "t": float(sol.t[-1]), "status": int(sol.status)}
