"""Cheap per-example suspicion scores from one training run: screens and baselines.

A *screen* trains one model on the whole training set, records its parameter trajectory
(``train_many(..., record_every=...)``) and turns it into one score per example. Screens
are cheap (about one training run) but unreliable: the audit uses them only to ORDER its
retraining search, and the report shows them as BASELINE detectors. They never decide.

Every screen returns a finite float array (n,) in which HIGHER means MORE SUSPICIOUS, and
is deterministic given its inputs (and seed).

Screens
-------
``gamma0``               the paper's mechanism (Slutzky et al., arXiv 2410.10473): each
                         example's share of the gamma0 term that pushes all entries of A up.
``trace_push``           the same mechanism at every position: each example's push on the
                         loss gradient along the uniform direction of A (all entries at once).
``gradient_similarity``  TracIn (Pruthi et al., 2020) against the trusted set: how much a
                         step on the example raises the trusted loss, summed over checkpoints.
``loss_trajectory``      BaDLoss-like (backdoor detection by loss dynamics): kNN anomaly of the
                         example's training-loss trajectory.
``spectral``             spectral signatures (Tran, Li, Madry, 2018) of per-example gradients.
``isolation_forest``     Isolation Forest (Liu, Ting, Zhou, 2008) on the raw sequences: a pure
                         outlier detector, blind to the model (fooled by harmless outliers).

Trajectories are lists of parameter dicts of stacked models (M, ...) as recorded by
:func:`auditor.train.train_many`; with M > 1 (a few runs) every model's checkpoints count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from auditor.ssm import Params, SSMSpec, forward, impulse_response, reverse_time, ssm_output
from auditor.train import TrainConfig, autograd_loss_and_grad, train_many

SCREENS = ("gamma0", "trace_push", "gradient_similarity", "loss_trajectory", "spectral", "isolation_forest")

_DTYPE = torch.float64


# --------------------------------------------------------------------------- helpers


def _tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Time-reversed sequences (n, K) and targets (n,) as float64 CPU tensors."""
    x_t = torch.as_tensor(np.asarray(x), dtype=_DTYPE)
    y_t = torch.as_tensor(np.asarray(y), dtype=_DTYPE)
    if x_t.ndim != 2 or y_t.shape != (x_t.shape[0],):
        raise ValueError(f"expected x (n, K) and y (n,), got {tuple(x_t.shape)} and {tuple(y_t.shape)}")
    return reverse_time(x_t), y_t


def _models(trajectory: list[Params]):
    """Every (checkpoint, model) of a trajectory as a float64 CPU batch of one."""
    for params in trajectory:
        M = next(iter(params.values())).shape[0]
        for m in range(M):
            yield {k: v[m:m + 1].detach().to(device="cpu", dtype=_DTYPE) for k, v in params.items()}


def _finite(scores) -> np.ndarray:
    """Scores as a finite float64 array: NaN -> 0, +-inf -> the largest finite float."""
    return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)


def _head(params: Params, s: torch.Tensor) -> torch.Tensor:
    """The ReLU network after the SSM output s (M, n), as in :func:`auditor.ssm.forward`."""
    if "w1" not in params:
        return s
    z1 = torch.relu(params["w1"] @ s.unsqueeze(1))                          # (M, width, n)
    return (params["w3"] @ torch.relu(params["w2"] @ z1)).squeeze(1)        # (M, n)


def output_residual(params: Params, x_rev: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dl_n/ds_n / 2 for the per-example loss l_n = (y_hat_n - y_n)^2: (M, n).

    s_n is the SSM output (1), so this is the residual that every SSM parameter's gradient
    sees: y_hat_n - y_n for the standalone SSM, (y_hat_n - y_n) dy_hat_n/ds_n with the MLP.
    """
    s = ssm_output(params, x_rev).detach().requires_grad_(True)               # (M, n)
    with torch.enable_grad():
        half_sse = 0.5 * ((_head(params, s) - y) ** 2).sum()
        (r,) = torch.autograd.grad(half_sse, s)
    return r                                                                  # (M, n)


def per_example_grads(params: Params, x_rev: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradients of l_n = (y_hat_n - y_n)^2 w.r.t. all parameters of one model: (n, P).

    ``params`` is a batch of one model; vectorized over examples with ``torch.func``.
    """
    names = list(params)
    single = {k: params[k][0] for k in names}

    def loss(p: Params, xr: torch.Tensor, yn: torch.Tensor) -> torch.Tensor:
        y_hat = forward({k: v.unsqueeze(0) for k, v in p.items()}, xr.unsqueeze(0))    # (1, 1)
        return (y_hat[0, 0] - yn) ** 2

    g = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(single, x_rev, y)
    return torch.cat([g[k].reshape(y.shape[0], -1) for k in names], dim=1)             # (n, P)


def _flat_grad(params: Params, x_rev: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean squared error (3) of one model on (x_rev, y): (P,)."""
    _, grads = autograd_loss_and_grad(params, x_rev, y, torch.ones(1, y.shape[0], dtype=_DTYPE))
    return torch.cat([grads[k].reshape(-1) for k in params])


def rank_average(scores: dict[str, np.ndarray], names=None) -> np.ndarray:
    """Mean over screens of each example's normalized rank in [0, 1] (1 = most suspicious).

    Ties share their average rank. ``names`` picks the screens (default: all of ``scores``).
    """
    names = list(scores) if names is None else list(names)
    if not names:
        raise ValueError("rank_average needs at least one screen")
    ranks = []
    for name in names:
        s = _finite(scores[name])
        ranks.append((rankdata(s) - 1) / max(len(s) - 1, 1))                  # (n,) in [0, 1]
    return np.mean(ranks, axis=0)


# --------------------------------------------------------------------------- screens


def gamma0_scores(*, trajectory: list[Params], x, y, signed: bool = False) -> np.ndarray:
    """Each example's share of the paper's gamma0 term, accumulated over the checkpoints.

    The gradient of the loss w.r.t. a_i contains, for every i, the same term
    c_i b_i gamma0(t), gamma0(t) = (2/N) sum_n r_n(t) x_n[k-1] (the paper's mechanism, arXiv 2410.10473;
    x_n[k-1] is the second-to-last element, 1-indexed, = x_rev[:, 1]); r_n is the
    residual seen by the SSM output (:func:`output_residual`: y_hat_n - y_n for the
    standalone SSM, times dy_hat_n/ds_n with the MLP). The default score is the magnitude

        score_n = sum_t |r_n(t) x_n[k-1]|                                    (signed=False)

    ``signed=True`` scores instead the net push on trace(A): a plain gradient step moves
    sum_i a_i by -lr kappa_1(t) gamma0(t), kappa_1 = sum_i c_i b_i, so example n
    contributes u_n(t) = -kappa_1(t) r_n(t) x_n[k-1] (> 0: pushes all entries up), and
    pushes that later reverse cancel. It is not the default: under Adam the step is not
    -lr * gradient, and a poison that ends slightly over-fitted keeps a small residual of
    the other sign for the whole tail of the run, which outweighs the early push (measured:
    AUROC 1.0 with the magnitude, 0.0 signed, on the ``network`` benchmark). The constant
    2/N and the step sizes (uniform checkpoints) are dropped: they do not change the ranking.
    """
    x_rev, y_t = _tensors(x, y)
    if x_rev.shape[1] < 2:
        raise ValueError("gamma0 needs sequences of length >= 2")
    score = torch.zeros(y_t.shape[0], dtype=_DTYPE)                          # (n,)
    for params in _models(trajectory):
        contrib = output_residual(params, x_rev, y_t)[0] * x_rev[:, 1]        # r_n x_n[k-1], (n,)
        if signed:
            score -= impulse_response(params, 1)[0, 0] * contrib              # u_n(t)
        else:
            score += contrib.abs()
    return _finite(score)


def trace_push_scores(*, trajectory: list[Params], x, y) -> np.ndarray:
    """Each example's push on all entries of A together, at every position, over the checkpoints.

    The paper's harm is a push that raises every a_i at once (the gamma0 term); gamma0
    keeps only its first-order part, the input at position k-1 (a_i^0 in (2)). The full
    push of example n is its loss gradient along the uniform direction of A,

        u_n(t) = sum_i dl_n/da_i = 2 r_n sum_i c_i b_i sum_{j>=2} (j-1) a_i^(j-2) x_n[K-j+1]

    (from (2); r_n as in :func:`output_residual`), which weights the input at distance j-1
    from the end by a_i^(j-2): position k-1 alone at a = 0, earlier positions as A grows.
    score_n = sum_t |u_n(t)|. Unlike gamma0 it sees a poison placed anywhere in the
    sequence, at the price of also seeing large clean inputs late in a sequence.
    """
    x_rev, y_t = _tensors(x, y)
    score = torch.zeros(y_t.shape[0], dtype=_DTYPE)                          # (n,)
    for params in _models(trajectory):
        d = params["a"].shape[1]
        g_a = per_example_grads(params, x_rev, y_t)[:, :d]                    # dl_n/da_i, (n, d)
        u = g_a.sum(1).abs()                                                  # |u_n(t)|, (n,)
        score += u / u.sum().clamp_min(1e-300)                                # its share at t
    return _finite(score)


def gradient_similarity_scores(*, trajectory: list[Params], x, y, x_val, y_val,
                               normalize: bool = False) -> np.ndarray:
    """TracIn against the trusted set: score_n = sum_t -<g_n(t), g_val(t)>.

    g_n is the gradient of example n's loss, g_val that of the trusted-set loss (the
    reference sequences may be longer than the training ones). A step on example n moves
    the parameters by -lr g_n, which changes the trusted loss by -lr <g_val, g_n>: a
    positive score means training on n RAISES the trusted loss (Pruthi et al., 2020, with
    the training example's test point replaced by the trusted set). Checkpoints are weighted
    equally (TracIn weights them by the step size; the normalized step of setting B is
    roughly constant in parameter distance). ``normalize=True`` uses cosines instead of
    inner products, so that large-gradient examples do not dominate.

    Known failure on clean-label SSM poisons (measured on the benchmarks): early in training
    the trusted loss on long sequences ALSO wants every kappa_j, hence every a_i, to grow,
    so a poison's gradient is aligned with the trusted gradient and the poison looks
    HELPFUL (per-checkpoint AUROC near 0). The harm is not first-order: it is the race
    between the entries of A that the push decides. The summed score is near chance.
    """
    x_rev, y_t = _tensors(x, y)
    xv_rev, yv_t = _tensors(x_val, y_val)
    score = torch.zeros(y_t.shape[0], dtype=_DTYPE)                          # (n,)
    for params in _models(trajectory):
        g = per_example_grads(params, x_rev, y_t)                             # (n, P)
        g_val = _flat_grad(params, xv_rev, yv_t)                              # (P,)
        dots = g @ g_val                                                      # (n,)
        if normalize:
            dots = dots / (g.norm(dim=1) * g_val.norm()).clamp_min(1e-300)
        score -= dots
    return _finite(score)


def loss_trajectory_scores(*, trajectory: list[Params], x, y, n_neighbors: int = 10,
                           log: bool = False) -> np.ndarray:
    """kNN anomaly of per-example training-loss trajectories (BaDLoss-like).

    Each example's feature vector is its loss l_n(t) = (y_hat_n - y_n)^2 at every
    checkpoint (of every model), or log(l + 1e-12) if ``log`` (the trajectory's shape rather
    than the example's scale; measured worse on the benchmarks), z-scored per checkpoint. The score is the mean
    Euclidean distance to the ``n_neighbors`` nearest OTHER examples, divided by its median
    over the training set (1 = typical). Poisons that come in groups larger than
    ``n_neighbors`` with alike trajectories are each other's neighbours and go unseen.
    """
    x_rev, y_t = _tensors(x, y)
    with torch.no_grad():
        losses = torch.stack([((forward(p, x_rev)[0] - y_t) ** 2) for p in _models(trajectory)],
                             dim=1).numpy()                                   # (n, T)
    feats = np.log(losses + 1e-12) if log else losses
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-12)                  # (n, T)
    feats = np.nan_to_num(feats, nan=0.0, posinf=1e6, neginf=-1e6)
    n = feats.shape[0]
    if n < 2:
        return np.zeros(n)
    k = min(n_neighbors, n - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(feats).kneighbors(feats)  # (n, k+1)
    knn = dist[:, 1:].mean(1)                                                 # drop self
    return _finite(knn / max(np.median(knn), 1e-300))


def spectral_signature_scores(*, params: Params, x, y) -> np.ndarray:
    """Spectral signatures (Tran, Li, Madry, 2018) of per-example gradients.

    Representations R (n, P) are the per-example gradients w.r.t. all parameters at
    ``params`` (the final checkpoint); R is centred and the score is the squared projection
    on its top right singular vector. With several models the scores are averaged.
    """
    x_rev, y_t = _tensors(x, y)
    score = np.zeros(y_t.shape[0])
    models = list(_models([params]))
    for p in models:
        r = per_example_grads(p, x_rev, y_t).numpy()                          # (n, P)
        r = np.nan_to_num(r - r.mean(0), nan=0.0, posinf=0.0, neginf=0.0)
        _, _, vt = np.linalg.svd(r, full_matrices=False)                      # vt (min(n,P), P)
        score += (r @ vt[0]) ** 2                                             # (n,)
    return _finite(score / len(models))


def isolation_forest_scores(*, x, seed: int = 0, n_estimators: int = 200) -> np.ndarray:
    """Isolation Forest anomaly score of the raw (flattened) sequences: (n,).

    Model-blind: it flags any unusual sequence, harmful or not, e.g. large clean outliers.
    """
    feats = np.asarray(x, dtype=np.float64).reshape(len(x), -1)               # (n, k)
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(feats)
    return _finite(-forest.score_samples(feats))                               # higher = more isolated


# --------------------------------------------------------------------------- all at once


def run_screens(*, spec: SSMSpec, x, y, x_val, y_val, config: TrainConfig, seed: int = 0,
                checkpoints: int = 20, device="cpu") -> dict[str, np.ndarray]:
    """Train one model on all examples and compute every screen in :data:`SCREENS`.

    The run records its parameters every ``max_steps // (50 checkpoints)`` steps (bounded
    memory, one run); if it stops too early to give ``checkpoints`` snapshots, it is rerun
    once with a finer ``record_every`` learned from the first run's step count. About
    ``checkpoints`` evenly spaced snapshots (the initial and final parameters included)
    are then used by every trajectory screen.

    Returns
    -------
    dict name -> array (n,), higher = more suspicious; ``gradient_similarity`` only when a
    trusted set (``x_val``, ``y_val``) is given.
    """
    n = len(np.asarray(y))
    ones = np.ones((1, n))
    record = max(1, config.max_steps // (50 * checkpoints))
    result = train_many(spec, x, y, ones, [seed], config, device=device, record_every=record)
    if len(result.trajectory) < checkpoints and record > 1:
        record = max(1, math.ceil(int(result.steps[0]) / checkpoints))
        result = train_many(spec, x, y, ones, [seed], config, device=device, record_every=record)
    snaps = result.trajectory + [result.params]
    keep = np.unique(np.linspace(0, len(snaps) - 1, checkpoints).round().astype(int))
    trajectory = [snaps[i] for i in keep]
    scores = {
        "gamma0": gamma0_scores(trajectory=trajectory, x=x, y=y),
        "trace_push": trace_push_scores(trajectory=trajectory, x=x, y=y),
        "loss_trajectory": loss_trajectory_scores(trajectory=trajectory, x=x, y=y),
        "spectral": spectral_signature_scores(params=result.params, x=x, y=y),
        "isolation_forest": isolation_forest_scores(x=x, seed=seed),
    }
    if x_val is not None:                       # gradient similarity needs the trusted set
        scores["gradient_similarity"] = gradient_similarity_scores(trajectory=trajectory, x=x, y=y,
                                                                   x_val=x_val, y_val=y_val)
    return {name: scores[name] for name in SCREENS if name in scores}
