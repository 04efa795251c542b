"""The audit of a classification set: deep SSM classifiers retrained over masks and seeds.

:class:`DeepAuditProblem` implements :class:`auditor.trials.Problem` for integer-labelled
sequence data with a trusted reference split: every trial trains one deep S4D classifier
(:mod:`auditor.deep`) on its masked training set, all trials of a call in one vectorized
:func:`auditor.deep.train_many`, and its outcome's ``error`` is the model's mean
cross-entropy on the trusted split (lower is better). Its extra ``kernel_effective_rank`` is
the entropy effective rank of the first layer's kernel matrix (H channels x L lags), a
diagnostic only (``mechanism`` is None: crafted poisons need not move it).

Screens and baselines (one training run on all data; HIGHER = MORE SUSPICIOUS)
------------------------------------------------------------------------------
``gradient_similarity``    TracIn (Pruthi et al., 2020) against the trusted split: how much
                           a step on the example raises the trusted loss, summed over
                           checkpoints; computed as forward-mode directional derivatives.
``loss_trajectory``        BaDLoss-like: kNN anomaly of per-example training-loss curves.
``spectral``               spectral signatures (Tran, Li, Madry, 2018) of the pooled
                           representation, per class.
``activation_clustering``  Chen et al. (2018): per class, 2-means on the top principal
                           components of the representation; members of the smaller cluster
                           score higher.
``deep_knn``               Deep k-NN (Peri et al., 2020): share of an example's k nearest
                           neighbours in representation space whose label differs.
``isolation_forest``       Isolation Forest on the raw sequences (model-blind).

The search is ordered by :data:`ORDERING`: TracIn, the first-order estimate of exactly what
the outcome measures (the trusted loss). The engine's regression audit also orders by loss
trajectories (rank-max); here that screen ranks the crafted poisons LAST (they are fitted
like typical examples: AUROC 0.31 on the digits benchmark, seed 0), so rank-max would only
interleave clean examples into the prefixes. Screens never decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from auditor.deep import (
    DeepSpec,
    DeepTrainConfig,
    Params,
    evaluate,
    features,
    per_example_loss,
    ssm_kernel,
    train_many,
)
from auditor.trials import Outcome, Trial, curves_by_name, with_and_without

ORDERING = ("gradient_similarity",)
SCREENS = ("gradient_similarity", "loss_trajectory", "spectral", "activation_clustering", "deep_knn",
           "isolation_forest")


@dataclass(frozen=True)
class DeepAuditProblem:
    """Everything a worker needs to run classification trials: data, model, training, device.

    Attributes
    ----------
    x : array (n, L) or (n, L, c) float; y : array (n,) int
    x_val, y_val : the trusted reference split (same length L and channels c)
    spec : DeepSpec; train : DeepTrainConfig
    device : str; dtype : "float32" or "float64"
    chunk : int, models per vectorized computation (0: 16 on a CPU, 256 on a GPU)
    ordering : names of the screens that order the search
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    spec: DeepSpec = field(default_factory=DeepSpec)
    train: DeepTrainConfig = field(default_factory=DeepTrainConfig)
    device: str = "cpu"
    dtype: str = "float32"
    chunk: int = 0
    ordering: tuple[str, ...] = ORDERING
    mechanism: str | None = None    # the kernel's rank is a diagnostic: crafted poisons need not move it

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def metric(self) -> str:
        return "trusted-set cross-entropy"

    def _chunk(self) -> int:
        return self.chunk or (16 if torch.device(self.device).type == "cpu" else 256)

    def fit(self, masks, seeds, *, record_every: int = 0):
        """Train one model per (mask, seed): :func:`auditor.deep.train_many` on this problem."""
        return train_many(self.spec, self.x, self.y, np.asarray(masks, np.float64), list(seeds), self.train,
                          dtype=getattr(torch, self.dtype), device=self.device, chunk=self._chunk(),
                          record_every=record_every)

    def run(self, trials: list[Trial]) -> list[Outcome]:
        """Train every trial's model in one batched call; outcomes in the trials' order."""
        if not trials:
            return []
        result = self.fit(np.stack([np.asarray(t.mask, bool) for t in trials]), [t.seed for t in trials])
        ev = evaluate(result.params, self.x_val, self.y_val, pool=self.spec.pool, device=self.device,
                      dtype=getattr(torch, self.dtype), chunk=self._chunk())
        error = torch.nan_to_num(ev["loss"], nan=float("inf"))
        rank = kernel_effective_rank(result.params, length=self.x.shape[1])
        steps = self.train.steps(self.n)
        return [Outcome(key=t.key, error=float(error[m]), train_loss=float(result.loss[m]),
                        converged=bool(torch.isfinite(result.loss[m])), steps=steps,
                        extras={"kernel_effective_rank": float(rank[m])})
                for m, t in enumerate(trials)]

    def screens(self, *, seed: int) -> dict[str, np.ndarray]:
        """Every screen of :data:`SCREENS` from one training run on all the data."""
        return run_deep_screens(self, seed=seed)

    def kernels(self, flagged: list[int], *, seed: int) -> dict[str, list[float]]:
        """Mean |K_h[j]| of the first layer's kernels (3), with all data and without the flagged set."""
        masks = with_and_without(self.n, flagged)
        result = self.fit(masks, [seed] * len(masks))
        return curves_by_name(ssm_kernel(result.params, 0, self.x.shape[1]).abs().mean(1))   # (M, L)

    def on_device(self, device: str) -> DeepAuditProblem:
        return self if device == self.device else replace(self, device=device)


def kernel_effective_rank(params: Params, *, length: int) -> torch.Tensor:
    """Entropy effective rank (Roy & Vetterli, 2007) of the first layer's kernel matrix
    (H x L), from its singular values: (M,)."""
    k = ssm_kernel({key: v.double() for key, v in params.items()}, 0, length)              # (M, H, L)
    s = torch.linalg.svdvals(k)                                                             # (M, min(H, L))
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-300)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum(-1))


# --------------------------------------------------------------------------- screens


def run_deep_screens(problem: DeepAuditProblem, *, seed: int, checkpoints: int = 10) -> dict[str, np.ndarray]:
    """Train one model on all examples (recording ``checkpoints`` snapshots) and score.

    Returns
    -------
    dict name -> array (n,), higher = more suspicious.
    """
    from auditor.screens import isolation_forest_scores

    steps = problem.train.steps(problem.n)
    every = max(1, steps // checkpoints)
    result = problem.fit(np.ones((1, problem.n)), [seed], record_every=every)
    snaps = result.trajectory[1:] + [result.params]                                        # after training starts
    dev = problem.device
    x = torch.as_tensor(problem.x, dtype=torch.float64, device=dev)                       # (n, L) or (n, L, c)
    y = torch.as_tensor(problem.y, dtype=torch.long, device=dev)
    xv = torch.as_tensor(problem.x_val, dtype=torch.float64, device=dev)
    yv = torch.as_tensor(problem.y_val, dtype=torch.long, device=dev)
    pool = problem.spec.pool
    snaps64 = [{k: v.to(device=dev, dtype=torch.float64) for k, v in s.items()} for s in snaps]
    losses = torch.stack([per_example_loss(s, x, y, pool=pool)[0] for s in snaps64], 1)   # (n, T)
    with torch.no_grad():
        feats = features(snaps64[-1], x, pool=pool)[0].T.cpu().numpy()                      # (n, H)
    labels = problem.y
    return {
        "gradient_similarity": tracin_scores(snaps64, x, y, xv, yv, pool=pool),
        "loss_trajectory": loss_trajectory_scores(losses.detach().cpu().numpy()),
        "spectral": spectral_signature_scores(feats, labels),
        "activation_clustering": activation_clustering_scores(feats, labels, seed=seed),
        "deep_knn": deep_knn_scores(feats, labels),
        "isolation_forest": isolation_forest_scores(x=problem.x, seed=seed),
    }


def tracin_scores(snapshots: list[Params], x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                  y_val: torch.Tensor, *, pool: str = "last") -> np.ndarray:
    """TracIn against the trusted split: score_n = sum_t -<grad l_n(theta_t), grad L_val(theta_t)>.

    A step on example n moves the parameters by -lr grad l_n, which changes the trusted loss
    by -lr <grad L_val, grad l_n>: a positive score means training on n RAISES the trusted
    loss. The inner products of all n examples are one forward-mode derivative of the
    per-example losses along grad L_val (no per-example gradients are formed).
    """
    score = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for params in snapshots:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            val = per_example_loss(leaves, x_val, y_val, pool=pool).mean()
            grads = torch.autograd.grad(val, list(leaves.values()))
        tangent = {k: g.detach() for k, g in zip(leaves, grads)}
        primal = {k: v.detach() for k, v in params.items()}
        _, dots = torch.func.jvp(lambda p: per_example_loss(p, x, y, pool=pool)[0], (primal,), (tangent,))
        score -= dots
    return _finite(score.cpu().numpy())


def loss_trajectory_scores(losses: np.ndarray, *, n_neighbors: int = 10) -> np.ndarray:
    """kNN anomaly of per-example loss trajectories (n, T), z-scored per checkpoint: the mean
    distance to the ``n_neighbors`` nearest other examples over its median (1 = typical)."""
    from sklearn.neighbors import NearestNeighbors

    feats = (losses - losses.mean(0)) / (losses.std(0) + 1e-12)
    feats = np.nan_to_num(feats, nan=0.0, posinf=1e6, neginf=-1e6)
    n = feats.shape[0]
    if n < 2:
        return np.zeros(n)
    k = min(n_neighbors, n - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(feats).kneighbors(feats)
    knn = dist[:, 1:].mean(1)
    return _finite(knn / max(np.median(knn), 1e-300))


def spectral_signature_scores(feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Spectral signatures: per class, the squared projection of the centred representation
    on its top right singular vector, divided by the class's mean (comparable across classes)."""
    score = np.zeros(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        r = feats[idx] - feats[idx].mean(0)
        if len(idx) < 2:
            continue
        _, _, vt = np.linalg.svd(r, full_matrices=False)
        proj = (r @ vt[0]) ** 2
        score[idx] = proj / max(proj.mean(), 1e-300)
    return _finite(score)


def activation_clustering_scores(feats: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                                 components: int = 10) -> np.ndarray:
    """Activation clustering: per class, 2-means on the top principal components; an example
    scores 1 - (its cluster's share of the class), plus a small term that grows with its
    distance to its own centroid (ties inside a cluster)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    score = np.zeros(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 4:
            continue
        r = feats[idx] - feats[idx].mean(0)
        z = PCA(n_components=min(components, r.shape[1], len(idx) - 1), random_state=seed).fit_transform(r)
        km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
        share = np.bincount(km.labels_, minlength=2) / len(idx)
        dist = np.linalg.norm(z - km.cluster_centers_[km.labels_], axis=1)
        score[idx] = 1.0 - share[km.labels_] + 1e-3 * dist / max(dist.max(), 1e-300)
    return _finite(score)


def deep_knn_scores(feats: np.ndarray, labels: np.ndarray, *, k: int = 10) -> np.ndarray:
    """Deep k-NN: share of the k nearest other training examples (representation space)
    whose label differs from the example's."""
    from sklearn.neighbors import NearestNeighbors

    n = len(labels)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(n)
    _, nb = NearestNeighbors(n_neighbors=k + 1).fit(feats).kneighbors(feats)
    return _finite((labels[nb[:, 1:]] != labels[:, None]).mean(1))


def _finite(scores) -> np.ndarray:
    return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)


def build_deep_problem(dataset, config) -> DeepAuditProblem:
    """The classification problem of ``dataset`` (an :class:`auditor.data.Dataset` with int
    labels and a trusted split) under ``config`` (:class:`auditor.config.AuditConfig`)."""
    from auditor.data import DatasetError

    if dataset.x.ndim not in (2, 3):
        raise DatasetError(f"this audit reads sequences x (n, k) or (n, k, channels); got x {dataset.x.shape}")
    if dataset.x_val is None:
        raise DatasetError("a classification audit needs a trusted reference split (x_val, y_val)")
    if dataset.x_val.shape[1] != dataset.x.shape[1]:
        raise DatasetError(f"x_val has length {dataset.x_val.shape[1]}, x has {dataset.x.shape[1]}; "
                           "a classification audit needs equal lengths")
    if dataset.x_val.shape[2:] != dataset.x.shape[2:]:
        raise DatasetError(f"x_val has shape {dataset.x_val.shape}, x has {dataset.x.shape}: the channels differ")
    classes = int(max(dataset.y.max(), dataset.y_val.max())) + 1
    if classes > 1000:
        raise DatasetError(f"{classes} classes: labels must be 0..C-1 with C <= 1000")
    spec = DeepSpec(n_classes=classes, d_input=dataset.channels, init=config.deep_init)
    return DeepAuditProblem(x=dataset.x, y=dataset.y, x_val=dataset.x_val, y_val=dataset.y_val, spec=spec,
                            train=DeepTrainConfig(), device=config.device)
