"""Bring your own PyTorch model: :class:`TorchModel` and the audit problem it builds.

A user's model is a callable ``factory(seed) -> torch.nn.Module`` whose module maps
sequences x of shape (batch, k, channels) to y of shape (batch, outputs) (regression) or to
logits (batch, classes) (classification). :class:`TorchModel` says how to train it; its
:meth:`TorchModel.problem` builds a :class:`TorchProblem`, which implements
:class:`auditor.trials.Problem`, so the audit engine, the in-process executor and the Ray
workers run it like the built-in students.

Every call to :meth:`TorchProblem.run` trains all its trials at once: the M modules (one
per trial, each from ``factory(trial.seed)``) are stacked with
:func:`torch.func.stack_module_state` and trained with ``vmap(grad(functional_call))``. A
trial's mask becomes per-example weights (0/1) of its model's loss, and each model stops
on its own: it trains until its loss is at most ``stop_loss``, then ``extra_steps`` more
updates, and stops changing while the others continue (the rule of :mod:`auditor.train`).
:func:`train_one` trains one model by the textbook route (autograd, ``torch.optim``); the
tests hold the two to a relative difference of 1e-6 in float64.

The problem is pickled to reach the Ray workers: the factory must be importable there (a
function or class defined at the top level of a module that the workers can import, not
a lambda or a closure).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from auditor.trials import Outcome, Trial

Tensors = dict[str, torch.Tensor]

DEFAULT_STEPS = 1000             # updates when neither steps, epochs nor stop_loss is given
SCREENS = ("loss_trajectory", "gradient_similarity", "gradient_norm", "isolation_forest")


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch model and how every trial trains it.

    Attributes
    ----------
    factory : callable seed -> torch.nn.Module
        Builds one model. It is called with the trial's seed, under torch's global RNG
        seeded with the same seed (so default initializers are reproducible too). The module
        maps x (batch, k, channels) to (batch, outputs) or to logits (batch, classes); a
        (batch,) output counts as one output. It must be deterministic (dropout and
        batch-norm statistics are off: models train in ``eval()`` mode) and, for the Ray
        workers, importable: a top-level function or class of a module, not a lambda.
    loss : "mse", "cross_entropy" or None
        None: cross-entropy for integer labels, mean squared error otherwise. A model's
        loss is the weighted mean of the per-example losses over its kept examples.
    optimizer : "adam", "sgd" or "ngd"
        "adam" is torch.optim.Adam's rule (``betas``, ``adam_eps``); "sgd" plain gradient
        descent with optional ``momentum`` (torch.optim.SGD's rule); "ngd" the paper's
        normalized gradient descent of the built-in SSM student:
        lr_t = lr / (sqrt(EMA_beta(g) / (1 - beta^t)) + 1e-6), g the sum over the parameter
        tensors of their gradient norms, per model (``ngd_beta`` = 0.8).
    lr : float
        Base step size (default 1e-3).
    steps, epochs : int, optional
        At most one. ``steps``: updates per model; ``epochs``: ``epochs * ceil(n /
        batch_size)`` updates, n the whole training set. Without ``stop_loss`` every model
        makes exactly that many (default 1000); with it they are the cap (default: the
        audit's ``max_steps``, 50 000).
    batch_size : int, optional
        None (default): full-batch training on each model's kept examples. Otherwise every
        update of a model uses ``batch_size`` of its kept examples drawn at random without
        replacement, from a generator seeded with the trial's seed (the draws of a trial do
        not depend on which other trials share its batch).
    stop_loss : float, optional
        Train until the (batch) loss is at most this, then ``extra_steps`` more updates.
    stop_above_floor : bool
        Count ``stop_loss`` above each subset's noise floor: the least mean squared error any
        linear function of the flattened sequence reaches on it (:func:`auditor.train.linear_floor`),
        so that noisy labels do not leave every model unconverged. For mean squared error
        and full-batch training, by models whose functions include the linear ones (the
        built-in multi-channel SSM); default False.
    extra_steps : int
        Updates after the loss first reaches ``stop_loss`` (default 0).
    dtype : "float64" or "float32"
        The modules are cast to it (default float64: audits compare small differences
        between models; float32 is faster, notably on a GPU).
    ordering : tuple of screen names, optional
        Screens whose scores order the audit's search (each example's highest rank). None:
        ``("loss_trajectory", "gradient_norm")`` for regression, ``("gradient_similarity",)``
        for classification. Any of :data:`SCREENS`.
    """

    factory: Callable[[int], torch.nn.Module]
    loss: Literal["mse", "cross_entropy"] | None = None
    optimizer: Literal["adam", "sgd", "ngd"] = "adam"
    lr: float = 1e-3
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    stop_loss: float | None = None
    stop_above_floor: bool = False
    extra_steps: int = 0
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    ngd_beta: float = 0.8
    dtype: Literal["float64", "float32"] = "float64"
    ordering: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise TypeError(f"factory must be callable seed -> nn.Module, got {type(self.factory).__name__}")
        if self.loss not in (None, "mse", "cross_entropy"):
            raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {self.loss!r}")
        if self.optimizer not in ("adam", "sgd", "ngd"):
            raise ValueError(f"optimizer must be 'adam', 'sgd' or 'ngd', got {self.optimizer!r}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        for name in ("steps", "epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.extra_steps < 0 or self.lr <= 0:
            raise ValueError("extra_steps must be >= 0 and lr > 0")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        unknown = set(self.ordering or ()) - set(SCREENS)
        if unknown:
            raise ValueError(f"unknown screens in ordering: {sorted(unknown)}; known: {SCREENS}")

    def max_steps(self, n: int, *, cap: int) -> int:
        """Most updates a model makes on a training set of ``n`` examples (``cap``: the
        audit's ``max_steps``, used with ``stop_loss`` when neither steps nor epochs is given)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return self.epochs * math.ceil(n / (self.batch_size or n))
        return cap if self.stop_loss is not None else DEFAULT_STEPS

    def loss_for(self, y: np.ndarray) -> str:
        return self.loss or ("cross_entropy" if np.issubdtype(np.asarray(y).dtype, np.integer) else "mse")

    def problem(self, dataset, config) -> "TorchProblem":
        """The audit problem of ``dataset`` (:class:`auditor.data.Dataset`) under ``config``
        (:class:`auditor.config.AuditConfig`: its ``max_steps`` and ``device`` are used)."""
        from auditor.data import DatasetError

        if dataset.x_val is None:
            raise DatasetError("a TorchModel audit needs a trusted reference set (x_val, y_val): "
                               "its outcome is the trained model's loss there")
        loss = self.loss_for(dataset.y)
        if loss == "cross_entropy" and dataset.task != "classification":
            raise DatasetError("loss 'cross_entropy' needs integer class labels")
        ordering = self.ordering or (("gradient_similarity",) if loss == "cross_entropy"
                                     else ("loss_trajectory", "gradient_norm"))
        return TorchProblem(x=_sequences(dataset.x), y=dataset.y, x_val=_sequences(dataset.x_val),
                            y_val=dataset.y_val, model=self, loss=loss,
                            max_steps=self.max_steps(dataset.n, cap=config.max_steps),
                            device=config.device, ordering=tuple(ordering))


def _sequences(x: np.ndarray) -> np.ndarray:
    """(n, k) -> (n, k, 1); (n, k, channels) unchanged."""
    x = np.asarray(x)
    return x[:, :, None] if x.ndim == 2 else x


# --------------------------------------------------------------------------- the problem


@dataclass(frozen=True)
class TorchProblem:
    """The audit problem of a :class:`TorchModel`: data, model, training, device.

    Outcomes: ``error`` is the trained model's loss on the trusted set (mean squared error
    or cross-entropy), ``train_loss`` its loss on its own kept examples, ``converged``
    whether it reached ``stop_loss`` (without one: whether the loss is finite), ``steps``
    its updates; no ``extras`` (an arbitrary model has no implicit-bias diagnostic, so there
    is no ``mechanism``) and no report curves (it implements :class:`auditor.trials.Screened`
    and :class:`auditor.trials.Placeable` only).
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    model: TorchModel
    loss: str
    max_steps: int
    device: str = "cpu"
    ordering: tuple[str, ...] = ("loss_trajectory",)
    checkpoints: int = field(default=20, compare=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def metric(self) -> str:
        return "trusted-set " + ("cross-entropy" if self.loss == "cross_entropy" else "mean squared error")

    def fit(self, masks, seeds, *, record_every: int = 0) -> "FitResult":
        """Train one model per (mask, seed): :func:`train_many` on this problem's data."""
        return train_many(self.model, self.x, self.y, masks, seeds, loss=self.loss, max_steps=self.max_steps,
                          device=self.device, record_every=record_every)

    def run(self, trials: list[Trial]) -> list[Outcome]:
        """Train every trial's model in one vectorized computation; outcomes in the trials' order."""
        if not trials:
            return []
        result = self.fit(np.stack([np.asarray(t.mask, bool) for t in trials]), [t.seed for t in trials])
        error = torch.nan_to_num(self.evaluate(result), nan=float("inf"))
        return [Outcome(key=t.key, error=float(error[m]), train_loss=float(result.loss[m]),
                        converged=bool(result.converged[m]), steps=int(result.steps[m]))
                for m, t in enumerate(trials)]

    def evaluate(self, result: "FitResult") -> torch.Tensor:
        """Mean loss of every trained model on the trusted set: (M,)."""
        with torch.no_grad():
            losses = per_example_losses(result.base, result.params, result.buffers, self.x_val, self.y_val,
                                        loss=self.loss)
        return losses.mean(-1).cpu()

    def screens(self, *, seed: int) -> dict[str, np.ndarray]:
        """Mechanism-agnostic screens from one training run on all the data (:data:`SCREENS`)."""
        from auditor.torch_screens import run_torch_screens

        return run_torch_screens(self, seed=seed, checkpoints=self.checkpoints)

    def on_device(self, device: str) -> "TorchProblem":
        return self if device == self.device else replace(self, device=device)


# --------------------------------------------------------------------------- training


@dataclass
class FitResult:
    """Trained models, stacked along the first axis.

    Attributes
    ----------
    base : the module (on the meta device) that ``functional_call`` runs
    params, buffers : dict of tensors (M, ...)
    loss : (M,) final loss of each model on its own kept examples (all of them)
    steps : (M,) updates made; converged : (M,) whether the loss reached ``stop_loss``
    trajectory : parameters every ``record_every`` steps (step 0 first), if asked
    """

    base: torch.nn.Module
    params: Tensors
    buffers: Tensors
    loss: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    trajectory: list[Tensors] = field(default_factory=list)


def build_modules(model: TorchModel, seeds, *, device="cpu") -> tuple[torch.nn.Module, Tensors, Tensors]:
    """One module per seed, stacked: (meta base, params (M, ...), buffers (M, ...))."""
    modules = [make_module(model, int(s), device=device) for s in seeds]
    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")
    return base, {k: v.detach() for k, v in params.items()}, {k: v.detach() for k, v in buffers.items()}


def make_module(model: TorchModel, seed: int, *, device="cpu") -> torch.nn.Module:
    """``model.factory(seed)`` under torch's RNG seeded with ``seed``, cast and in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = model.factory(seed)
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"the factory returned a {type(module).__name__}, not a torch.nn.Module")
    return module.to(device=device, dtype=getattr(torch, model.dtype)).eval()


def _tensor(a, *, dtype, device) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype, device=device)


def _targets(y, loss: str, *, device, dtype) -> torch.Tensor:
    if loss == "cross_entropy":
        return _tensor(y, dtype=torch.long, device=device)
    t = _tensor(y, dtype=dtype, device=device)
    return t[:, None] if t.ndim == 1 else t


def example_losses(out: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-example losses of one model's outputs (B, ...) against targets: (B,)."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y, reduction="none")
    return ((out.reshape(y.shape[0], -1) - y) ** 2).mean(-1)


def per_example_losses(base, params: Tensors, buffers: Tensors, x, y, *, loss: str,
                       chunk: int = 64) -> torch.Tensor:
    """Loss of every stacked model on every example of (x, y): (M, n), in chunks of models."""
    first = next(iter(params.values()))
    x_t = _tensor(x, dtype=first.dtype, device=first.device)
    y_t = _targets(y, loss, device=first.device, dtype=first.dtype)

    def one(p, b):
        return example_losses(functional_call(base, (p, b), (x_t,)), y_t, loss)

    M = first.shape[0]
    rows = [vmap(one)({k: v[i:i + chunk] for k, v in params.items()},
                      {k: v[i:i + chunk] for k, v in buffers.items()}) for i in range(0, M, chunk)]
    return torch.cat(rows)


def train_many(model: TorchModel, x, y, masks, seeds, *, loss: str | None = None, max_steps: int | None = None,
               device="cpu", record_every: int = 0) -> FitResult:
    """Train M models at once, model m on the examples ``masks[m]`` from ``seeds[m]``.

    Parameters
    ----------
    model : TorchModel
    x : array (n, k, channels); y : array (n,) or (n, outputs), or int (n,) labels
    masks : array (M, n) of 0/1 or bool; every row keeps at least one example
    seeds : M ints
    loss : the loss (default: ``model.loss_for(y)``)
    max_steps : most updates (default: ``model.max_steps(n, cap=50_000)``)
    device : torch device
    record_every : if positive, keep every model's parameters each ``record_every`` steps

    Returns
    -------
    FitResult; model m equals :func:`train_one` with ``masks[m]`` and ``seeds[m]``.
    """
    dtype = getattr(torch, model.dtype)
    loss = loss or model.loss_for(y)
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    y_t = _targets(y, loss, device=device, dtype=dtype)
    w_all = torch.as_tensor(np.asarray(masks), dtype=dtype, device=device)
    n, M = x_t.shape[0], w_all.shape[0]
    if w_all.ndim != 2 or w_all.shape[1] != n:
        raise ValueError(f"masks must have shape (M, {n}), got {tuple(w_all.shape)}")
    if len(seeds) != M:
        raise ValueError(f"{M} masks but {len(seeds)} seeds")
    if (w_all.sum(-1) <= 0).any():
        raise ValueError("every mask must keep at least one example")
    max_steps = max_steps or model.max_steps(n, cap=50_000)
    base, params, buffers = build_modules(model, seeds, device=device)
    start = {k: v.clone() for k, v in params.items()}
    grad_fn = _grad_fn(base, loss, batched=model.batch_size is not None)
    sampler = _Sampler(model.batch_size, seeds, w_all) if model.batch_size else None
    opt = _Optimizer(model, params)
    stop = _stop_losses(model, x, y, w_all, loss=loss).to(device=device, dtype=w_all.dtype)     # (M,)
    track = _Tracker(M, model.extra_steps, device)
    out = {k: v.clone() for k, v in start.items()}
    trajectory: list[Tensors] = []
    live = torch.arange(M, device=device)
    w = w_all

    def retire(sel: torch.Tensor) -> None:
        for k in out:
            out[k][live[sel]] = params[k][sel]
        track.retire(live[sel], sel)

    for t in range(1, max_steps + 1):
        if record_every and (t - 1) % record_every == 0:
            trajectory.append(_snapshot(out, params, live))
        live_buffers = {k: v[live] for k, v in buffers.items()}
        if sampler is None:
            grads, batch_loss = grad_fn(params, live_buffers, w, x_t, y_t)
        else:
            idx = sampler.draw(live)
            grads, batch_loss = grad_fn(params, live_buffers, torch.gather(w, 1, idx), x_t[idx], y_t[idx])
        done = track.observe(batch_loss <= stop)
        n_done = int(done.sum())
        if n_done == live.numel():
            break
        if n_done and n_done * 8 >= live.numel():                 # compact the batch
            retire(done)
            keep = ~done
            live, w, stop = live[keep], w[keep], stop[keep]
            params = {k: v[keep] for k, v in params.items()}
            grads = {k: v[keep] for k, v in grads.items()}
            opt.keep(keep)
            track.keep(keep)
            done = done[keep]
        active = (~done).to(dtype)
        opt.step(params, grads, t, active)
        track.advance(~done)
    retire(torch.ones_like(live, dtype=torch.bool))
    with torch.no_grad():
        losses = per_example_losses(base, out, buffers, x_t, y, loss=loss)
        final = (losses * w_all).sum(-1) / w_all.sum(-1)
    return FitResult(base=base, params=out, buffers=buffers, loss=final.cpu(), steps=track.steps_out.cpu(),
                     converged=(track.reached_out if model.stop_loss is not None
                                else torch.isfinite(final)).cpu(),
                     trajectory=trajectory)


def _snapshot(out: Tensors, params: Tensors, live: torch.Tensor) -> Tensors:
    full = {k: v.clone() for k, v in out.items()}
    for k in full:
        full[k][live] = params[k]
    return full


def _grad_fn(base, loss: str, *, batched: bool):
    """vmap over models of the gradient of each model's weighted mean loss."""

    def model_loss(p, b, w, xb, yb):
        per = example_losses(functional_call(base, (p, b), (xb,)), yb, loss)
        return (w * per).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    dims = (0, 0, 0, 0, 0) if batched else (0, 0, 0, None, None)
    return vmap(grad_and_value(model_loss), in_dims=dims)


def _stop_losses(model: TorchModel, x, y, masks, *, loss: str) -> torch.Tensor:
    """Each model's ``stop_loss`` (M,), above its subset's noise floor where the model asks
    for it (``stop_above_floor``); -inf without a ``stop_loss``."""
    M = len(masks)
    if model.stop_loss is None:
        return torch.full((M,), -math.inf, dtype=torch.float64)
    if not model.stop_above_floor:
        return torch.full((M,), float(model.stop_loss), dtype=torch.float64)
    if loss != "mse" or model.batch_size is not None:
        raise ValueError("stop_above_floor needs the mse loss and full-batch training")
    from auditor.train import linear_floor

    masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    return model.stop_loss + torch.as_tensor(linear_floor(x, y, masks), dtype=torch.float64)


class _Tracker:
    """Per-model stopping: reached stop_loss, extra steps left, updates made (as :mod:`auditor.train`)."""

    def __init__(self, M: int, extra_steps: int, device):
        self.reached = torch.zeros(M, dtype=torch.bool, device=device)
        self.remaining = torch.full((M,), extra_steps, dtype=torch.long, device=device)
        self.updates = torch.zeros(M, dtype=torch.long, device=device)
        self.steps_out = torch.zeros(M, dtype=torch.long, device=device)
        self.reached_out = torch.zeros(M, dtype=torch.bool, device=device)

    def observe(self, below: torch.Tensor) -> torch.Tensor:
        """Record which models' loss is at most stop_loss; return which are done."""
        self.reached |= below
        return self.reached & (self.remaining <= 0)

    def advance(self, active: torch.Tensor) -> None:
        self.updates += active
        self.remaining -= (self.reached & active).long()

    def retire(self, idx: torch.Tensor, sel: torch.Tensor) -> None:
        self.steps_out[idx] = self.updates[sel]
        self.reached_out[idx] = self.reached[sel]

    def keep(self, keep: torch.Tensor) -> None:
        self.reached, self.remaining, self.updates = self.reached[keep], self.remaining[keep], self.updates[keep]


class _Sampler:
    """Each model's mini-batch: ``batch_size`` of its kept examples at random, from its own generator."""

    def __init__(self, batch_size: int, seeds, w: torch.Tensor):
        self.batch_size = min(batch_size, w.shape[1])
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.w = w

    def draw(self, live: torch.Tensor) -> torch.Tensor:
        """Indices (len(live), batch_size); a model with fewer kept examples gets all of them
        (padded with weight-0 examples)."""
        n = self.w.shape[1]
        keys = torch.stack([torch.rand(n, generator=self.generators[int(m)], dtype=torch.float64)
                            for m in live.tolist()]).to(self.w.device)
        keys = keys + 2.0 * (self.w[live] <= 0)                              # unkept examples last
        return keys.topk(self.batch_size, dim=1, largest=False).indices


class _Optimizer:
    """Adam, SGD (with momentum) or normalized GD on stacked parameters (M, ...), per model."""

    def __init__(self, model: TorchModel, params: Tensors):
        self.model = model
        self.state = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
        first = next(iter(params.values()))
        self.ema = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)

    def step(self, params: Tensors, grads: Tensors, t: int, active: torch.Tensor) -> None:
        m = self.model
        if m.optimizer == "ngd":
            gnorm = sum(g.flatten(1).norm(dim=1) for g in grads.values())              # (M,)
            self.ema.mul_(m.ngd_beta).add_(gnorm, alpha=1 - m.ngd_beta)
            lr = m.lr / (torch.sqrt(self.ema / (1 - m.ngd_beta ** t)) + 1e-6) * active
            for k, g in grads.items():
                params[k] = params[k] - _per_model(lr, g) * g
        elif m.optimizer == "sgd":
            for k, g in grads.items():
                if m.momentum:
                    buf = self.state[k][0]
                    buf.copy_(g if t == 1 else buf * m.momentum + g)
                    g = buf
                params[k] = params[k] - m.lr * _per_model(active, g) * g
        else:
            b1, b2 = m.betas
            for k, g in grads.items():
                mom, var = self.state[k]
                mom.mul_(b1).add_(g, alpha=1 - b1)
                var.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = var.sqrt() / math.sqrt(1 - b2 ** t) + m.adam_eps
                params[k] = params[k] - (m.lr / (1 - b1 ** t)) * _per_model(active, g) * mom / denom

    def keep(self, keep: torch.Tensor) -> None:
        self.state = {k: (a[keep], b[keep]) for k, (a, b) in self.state.items()}
        self.ema = self.ema[keep]


def _per_model(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


# --------------------------------------------------------------------------- one model


def train_one(model: TorchModel, x, y, mask, seed: int, *, loss: str | None = None,
              max_steps: int | None = None, device="cpu") -> FitResult:
    """Train one model on the examples ``mask`` from ``seed``: the plain autograd loop with
    ``torch.optim`` (Adam, SGD) or the normalized step written out (ngd). Full-batch only.

    Returns a :class:`FitResult` holding one model (M = 1).
    """
    if model.batch_size is not None:
        raise ValueError("train_one is the full-batch reference")
    dtype = getattr(torch, model.dtype)
    loss = loss or model.loss_for(y)
    keep = torch.as_tensor(np.asarray(mask), device=device).bool()
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)[keep]
    y_t = _targets(y, loss, device=device, dtype=dtype)[keep]
    max_steps = max_steps or model.max_steps(int(len(mask)), cap=50_000)
    module = make_module(model, seed, device=device)
    params = list(module.parameters())
    if model.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=model.lr, betas=model.betas, eps=model.adam_eps)
    elif model.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=model.lr, momentum=model.momentum)
    else:
        opt = None

    def loss_fn() -> torch.Tensor:
        return example_losses(module(x_t), y_t, loss).mean()

    stop = float(_stop_losses(model, x, y, np.asarray(mask)[None], loss=loss)[0])
    ema, reached, remaining, steps = 0.0, False, model.extra_steps, 0
    for t in range(1, max_steps + 1):
        value = loss_fn()
        grads = torch.autograd.grad(value, params)
        reached = reached or value.item() <= stop
        if reached and remaining <= 0:
            break
        with torch.no_grad():
            if opt is not None:
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()
            else:
                ema = model.ngd_beta * ema + (1 - model.ngd_beta) * sum(g.norm() for g in grads)
                lr = model.lr / (torch.sqrt(ema / (1 - model.ngd_beta ** t)) + 1e-6)
                for p, g in zip(params, grads):
                    p.sub_(lr * g)
        steps += 1
        remaining -= int(reached)
    with torch.no_grad():
        final = loss_fn().reshape(1)
    named = {k: v.detach().unsqueeze(0) for k, v in module.named_parameters()}
    buffers = {k: v.detach().unsqueeze(0) for k, v in module.named_buffers()}
    return FitResult(base=copy.deepcopy(module).to("meta"), params=named, buffers=buffers, loss=final.cpu(),
                     steps=torch.tensor([steps]),
                     converged=torch.tensor([reached if model.stop_loss is not None else bool(final.isfinite())]))
