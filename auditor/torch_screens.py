"""Mechanism-agnostic screens for any PyTorch model (:class:`auditor.torch_model.TorchProblem`).

One model is trained on all the data, its parameters recorded at about ``checkpoints``
evenly spaced steps, and every screen turns that trajectory into one score per example
(HIGHER = MORE SUSPICIOUS). Screens only order the audit's search; they never decide.

``loss_trajectory``      kNN anomaly of per-example training-loss curves (BaDLoss-like).
``gradient_norm``        each example's share of the per-example gradient norm, summed over
                         the checkpoints: how hard an example pulls on the parameters while
                         the model learns (the generic counterpart of the SSM student's
                         ``trace_push``, without its direction).
``gradient_similarity``  TracIn against the trusted set: how much a step on the example
                         raises the trusted loss, summed over checkpoints (forward-mode).
``isolation_forest``     Isolation Forest on the raw sequences (model-blind).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vmap

from auditor.torch_model import Tensors, _targets, _tensor, example_losses, per_example_losses


def run_torch_screens(problem, *, seed: int, checkpoints: int = 20) -> dict[str, np.ndarray]:
    """Train one model on all examples of ``problem`` and compute every screen.

    Returns
    -------
    dict name -> array (n,), higher = more suspicious.
    """
    from auditor.deep_problem import loss_trajectory_scores
    from auditor.screens import isolation_forest_scores

    trajectory, result = _trajectory(problem, seed=seed, checkpoints=checkpoints)
    base, buffers = result.base, result.buffers
    losses = torch.cat([per_example_losses(base, p, buffers, problem.x, problem.y, loss=problem.loss)
                        for p in trajectory]).T                                          # (n, T)
    return {
        "loss_trajectory": loss_trajectory_scores(losses.detach().cpu().numpy()),
        "gradient_norm": gradient_norm_scores(problem, base, buffers, trajectory),
        "gradient_similarity": tracin_scores(problem, base, buffers, trajectory),
        "isolation_forest": isolation_forest_scores(x=problem.x, seed=seed),
    }


def _trajectory(problem, *, seed: int, checkpoints: int):
    """About ``checkpoints`` evenly spaced parameter snapshots (batches of one model) of a
    run on all the data, the initial and final parameters included."""
    ones = np.ones((1, problem.n))
    cap = problem.max_steps
    stops_early = problem.model.stop_loss is not None
    record = max(1, cap // (50 * checkpoints) if stops_early else cap // checkpoints)
    result = problem.fit(ones, [seed], record_every=record)
    if len(result.trajectory) < checkpoints and record > 1:
        record = max(1, math.ceil(int(result.steps[0]) / checkpoints))
        result = problem.fit(ones, [seed], record_every=record)
    snaps = result.trajectory + [result.params]
    keep = np.unique(np.linspace(0, len(snaps) - 1, checkpoints).round().astype(int))
    return [snaps[i] for i in keep], result


def _example_grads(problem, base, buffers: Tensors, params: Tensors, *, chunk: int = 256):
    """Per-example gradients of one model (a batch of one), flattened: yields (chunk, P)."""
    single = {k: v[0] for k, v in params.items()}
    bufs = {k: v[0] for k, v in buffers.items()}
    first = next(iter(single.values()))
    x = _tensor(problem.x, dtype=first.dtype, device=first.device)
    y = _targets(problem.y, problem.loss, device=first.device, dtype=first.dtype)

    def loss(p, xn, yn):
        return example_losses(functional_call(base, (p, bufs), (xn[None],)), yn[None], problem.loss)[0]

    for i in range(0, x.shape[0], chunk):
        g = vmap(grad(loss), in_dims=(None, 0, 0))(single, x[i:i + chunk], y[i:i + chunk])
        yield torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], dim=1)


def gradient_norm_scores(problem, base, buffers: Tensors, trajectory: list[Tensors]) -> np.ndarray:
    """score_n = sum_t |g_n(t)| / sum_m |g_m(t)|, g_n the gradient of example n's loss."""
    score = torch.zeros(problem.n, dtype=torch.float64)
    for params in trajectory:
        norms = torch.cat([g.norm(dim=1) for g in _example_grads(problem, base, buffers, params)])
        score += (norms / norms.sum().clamp_min(1e-300)).double().cpu()
    return _finite(score.numpy())


def tracin_scores(problem, base, buffers: Tensors, trajectory: list[Tensors]) -> np.ndarray:
    """TracIn against the trusted set: score_n = sum_t -<grad l_n(t), grad L_val(t)>, as one
    forward-mode derivative of the per-example losses along grad L_val per checkpoint.
    Modules without forward-mode support score 0."""
    score = torch.zeros(problem.n, dtype=torch.float64)
    for params in trajectory:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            val = per_example_losses(base, leaves, buffers, problem.x_val, problem.y_val, loss=problem.loss).mean()
            grads = torch.autograd.grad(val, list(leaves.values()))
        tangent = {k: g.detach() for k, g in zip(leaves, grads)}
        primal = {k: v.detach() for k, v in params.items()}
        try:
            _, dots = jvp(lambda p: per_example_losses(base, p, buffers, problem.x, problem.y, loss=problem.loss)[0],
                          (primal,), (tangent,))
        except (RuntimeError, NotImplementedError):
            return np.zeros(problem.n)
        score -= dots.double().cpu()
    return _finite(score.numpy())


def _finite(scores) -> np.ndarray:
    return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
