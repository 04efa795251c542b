"""Clean-label poisons for deep SSM classifiers: gradient matching and late collisions.

The attack of the paper's real-data experiment is "Witches' Brew" gradient matching
(Geiping et al., ICLR 2021) with an added penalty that moves the perturbation's energy to
the last sequence elements. The attacker knows the training set and the architecture, not
the victim's seed; it perturbs a small fraction of the training sequences within an l_inf
budget (inputs stay in a box, [0, 1] for pixels) and leaves every label unchanged.

With surrogate models theta_s (trained on the clean set from their own seeds, optionally
taken at several checkpoints of their training), poisons x_p + delta_p with labels y_p,
and the adversarial gradient g_s:

    J(delta) = mean_s [1 - cos(grad_theta L_p(theta_s; delta), g_s)]
               + lam * sum_p sum_l omega_l delta_pl^2 / (P eps^2)                         (1)
    L_p = mean_p CE(f(x_p + delta_p), y_p),   omega_l = 1 - l / (L - 1)   (l = 0..L-1)       (2)

(with c input channels, delta_pl is a vector and delta_pl^2 its squared norm)

Training on the poisons moves theta along -grad L_p, hence (when (1) is small) along -g_s:

``targeted``    g = grad_theta mean_t CE(f(x_t), y_adv): descending it teaches chosen
                target sequences x_t an adversarial class y_adv; the poisons are drawn
                from class y_adv (so their clean labels are y_adv).
``untargeted``  g = -grad_theta mean CE(f(x_a), y_a) on the attacker's own clean data:
                descending it RAISES the clean loss (an availability attack).

omega_l penalizes energy at early positions (eq. (2)), so the perturbation sits in the
last elements, the paper's "last rows". delta is optimized by signed Adam and projected
onto {|delta| <= eps, low <= x + delta <= high} ([low, high] = [0, 1] unless given) after every step, with the step size cut 10x
at 3/8, 5/8 and 7/8 of the steps, from ``restarts`` starts (the lowest J is kept).

Starts. ``random``: uniform in the l_inf ball (Witches' Brew). ``collision`` (targeted
only): each poison's last ``late`` elements are moved toward those of a target,

    delta_pl = clip(x_t(p),l - x_pl, -eps, eps)  for the last ``late`` l, 0 elsewhere,      (3)

targets assigned to poisons in turn. With ``steps=0`` the collision start is itself the
attack (a feature collision in the late elements, Shafahi et al., 2018). Measured on the
digits (``benchmarks/digits_harm.py``, 3 seeds x 6 retrained victims): gradient matching
(1) reaches cosines of 0.9 and more on the surrogates, yet no retrained victim was harmed,
targeted or untargeted, at eps 16/255 or 1; refining a collision start by (1) removes its
harm; a collision on the last 48 elements at eps 1 is the budget at which the harm shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from auditor.deep import DeepSpec, DeepTrainConfig, Params, per_example_loss, train_many

MODES = ("untargeted", "targeted")


@dataclass(frozen=True)
class CraftConfig:
    """How poisons are crafted.

    Attributes
    ----------
    mode : "untargeted" or "targeted"
    fraction : float, share of the training set that is perturbed
    eps : float, l_inf budget in the data's units (16/255 of [0, 1] pixel values in the paper)
    late_penalty : float, lam of eq. (1) (0 disables the move to late positions)
    steps : int, signed-Adam iterations of (1) per restart (0: the start is the attack)
    lr : float, step size in units of eps
    restarts : int, starts; the one with the lowest objective is kept
    start : "random" or "collision" (eq. (3), ``targeted`` only)
    late : int, the last sequence elements the collision start writes
    surrogates : int, surrogate models (ensemble) the gradients are matched on
    checkpoints : int, points of each surrogate's training run (evenly spaced, the end
        included) at which the gradients are matched; 1 = the trained surrogates only
    targets : int, target sequences (``targeted``)
    selection : "random" or "gradient" (largest surrogate gradient norm, Witches' Brew)
    """

    mode: str = "untargeted"
    fraction: float = 0.1
    eps: float = 16 / 255
    late_penalty: float = 1.0
    steps: int = 200
    lr: float = 0.1
    restarts: int = 1
    start: str = "random"
    late: int = 32
    surrogates: int = 2
    checkpoints: int = 1
    targets: int = 4
    selection: str = "random"


@dataclass
class Crafted:
    """The poisoned training set and what the attack did.

    Attributes
    ----------
    x : array (n, L) or (n, L, c), the training set with the poisons perturbed
    poison : array (P,) int, indices of the perturbed examples
    delta : array (P, L) or (P, L, c), their perturbations
    targets : array (T,) int or None, indices into the attacker's target pool (``targeted``)
    adversarial_class : int or None
    stats : dict, objective before/after, late-energy share, seconds
    """

    x: np.ndarray
    poison: np.ndarray
    delta: np.ndarray
    targets: np.ndarray | None
    adversarial_class: int | None
    stats: dict


def surrogates(spec: DeepSpec, train: DeepTrainConfig, x, y, *, seeds, checkpoints: int = 1,
               dtype=torch.float32, device="cpu") -> Params:
    """Surrogate models trained on all of (x, y), one per seed, at ``checkpoints`` evenly
    spaced points of their training (the trained models last), stacked (M_s * checkpoints, ...)."""
    steps = train.steps(len(x))
    every = max(1, steps // checkpoints)
    result = train_many(spec, x, y, np.ones((len(seeds), len(x))), list(seeds), train, dtype=dtype,
                        device=device, record_every=every if checkpoints > 1 else 0)
    snaps = (result.trajectory[1:] + [result.params])[-checkpoints:]
    return {k: torch.cat([s[k] for s in snaps]) for k in result.params}


def flat_grad(params: Params, x: torch.Tensor, y: torch.Tensor, *, pool: str = "last", sign: float = 1.0,
              create_graph: bool = False) -> torch.Tensor:
    """sign * gradient of the mean cross-entropy on (x, y) of every stacked model: (M, P)."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = per_example_loss(leaves, x, y, pool=pool).mean(1).sum()
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=create_graph)
    M = next(iter(params.values())).shape[0]
    return sign * torch.cat([g.reshape(M, -1) for g in grads], 1)


def late_weights(length: int, *, channels: bool = False, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """omega_l of eq. (2): 1 at the first position, 0 at the last: (L,), or (L, 1) for
    ``channels`` (inputs (P, L, c): every channel of a position weighs the same)."""
    omega = 1.0 - torch.arange(length, dtype=dtype, device=device) / max(length - 1, 1)   # (L,)
    return omega.unsqueeze(-1) if channels else omega


def late_share(delta: np.ndarray, *, last: int) -> float:
    """Share of the perturbations' energy in the ``last`` sequence elements."""
    d2 = np.asarray(delta, float) ** 2
    total = d2.sum()
    return float(d2[:, -last:].sum() / total) if total > 0 else 0.0


def craft(*, x, y, spec: DeepSpec, train: DeepTrainConfig, config: CraftConfig, x_attack, y_attack,
          seed: int = 0, device="cpu", dtype=torch.float32, bounds: tuple[float, float] = (0.0, 1.0)) -> Crafted:
    """Craft clean-label poisons on the training set (x, y) by gradient matching, eq. (1).

    Parameters
    ----------
    x : array (n, L) or (n, L, c) in ``bounds``; y : array (n,) int
    spec, train : the architecture and training the attacker assumes (victims retrain from
        seeds the attacker does not know)
    config : CraftConfig
    x_attack, y_attack : the attacker's own clean data: the untargeted gradient's data, or
        the pool the targets are drawn from (``targeted``)
    seed : int, the attacker's randomness (surrogate seeds, selection, starts)
    bounds : (low, high), the box the poisoned sequences stay in

    Returns
    -------
    Crafted
    """
    import time

    if config.mode not in MODES:
        raise ValueError(f"unknown attack mode {config.mode!r}; known: {', '.join(MODES)}")
    if config.start not in ("random", "collision"):
        raise ValueError(f"unknown start {config.start!r}; known: random, collision")
    if config.start == "collision" and config.mode != "targeted":
        raise ValueError("the collision start needs targets (mode 'targeted')")
    start_time = time.perf_counter()
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    n, L = x.shape[:2]
    rng = np.random.default_rng([seed, 0xA77AC])
    sur = surrogates(spec, train, x, y, seeds=[10_000 + 97 * seed + s for s in range(config.surrogates)],
                     checkpoints=config.checkpoints, dtype=dtype, device=device)
    sur = {k: v.to(device=device, dtype=dtype) for k, v in sur.items()}
    xa = torch.as_tensor(np.asarray(x_attack), dtype=dtype, device=device)
    ya = torch.as_tensor(np.asarray(y_attack), dtype=torch.long, device=device)
    n_poison = max(1, round(config.fraction * n))
    targets = adv = None
    if config.mode == "targeted":
        targets, adv = _pick_targets(sur, xa, ya, count=config.targets, rng=rng, pool=spec.pool)
        target_y = torch.full((len(targets),), adv, dtype=torch.long, device=device)
        g_adv = flat_grad(sur, xa[targets], target_y, pool=spec.pool)                                  # (M_s, P)
        pool = np.flatnonzero(y == adv)
    else:
        g_adv = flat_grad(sur, xa, ya, pool=spec.pool, sign=-1.0)                                    # (M_s, P)
        pool = np.arange(n)
    n_poison = min(n_poison, len(pool))
    poison = _select(sur, x, y, pool, n_poison, config.selection, rng=rng, dtype=dtype, device=device,
                     readout=spec.pool)
    xp = torch.as_tensor(x[poison], dtype=dtype, device=device)                          # (P, L) or (P, L, c)
    yp = torch.as_tensor(y[poison], dtype=torch.long, device=device)
    omega = late_weights(L, channels=x.ndim == 3, dtype=dtype, device=device)              # (L,) or (L, 1)

    def objective(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = flat_grad(sur, xp + delta, yp, pool=spec.pool, create_graph=True)                         # (M_s, P)
        cos = torch.nn.functional.cosine_similarity(g, g_adv, dim=1)                     # (M_s,)
        penalty = (delta.pow(2) * omega).sum() / (len(poison) * config.eps ** 2)
        return (1 - cos).mean() + config.late_penalty * penalty, (1 - cos).mean()

    with torch.no_grad():
        zero = torch.zeros_like(xp)
    base_match = float(_detached(objective, zero)[1])
    best, best_j, best_match = zero, math.inf, base_match
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(config.restarts):
        if config.start == "collision":
            init = collision_start(x[poison], np.asarray(x_attack)[targets], eps=config.eps, late=config.late)
        else:
            init = (torch.rand(xp.shape, generator=gen, dtype=torch.float64) * 2 - 1) * config.eps
        delta = _project(init.to(device=device, dtype=dtype), xp, config.eps, bounds).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=config.lr * config.eps)
        cuts = {round(config.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)}
        for step in range(config.steps):
            if step in cuts:
                for group in opt.param_groups:
                    group["lr"] *= 0.1
            opt.zero_grad()
            j, _ = objective(delta)
            (grad,) = torch.autograd.grad(j, delta)
            delta.grad = grad.sign()
            opt.step()
            with torch.no_grad():
                delta.copy_(_project(delta, xp, config.eps, bounds))
        j, match = _detached(objective, delta.detach())
        if float(j) < best_j:
            best, best_j, best_match = delta.detach().clone(), float(j), float(match)
    delta_np = best.cpu().double().numpy()
    x_out = x.copy()
    x_out[poison] = np.clip(x[poison] + delta_np, *bounds)
    delta_np = x_out[poison] - x[poison]
    stats = {"mode": config.mode, "poisons": len(poison), "eps": config.eps,
             "match_before": base_match, "match_after": best_match, "objective": best_j,
             "linf": float(np.abs(delta_np).max()), "late_share_last_8": late_share(delta_np, last=8),
             "late_share_last_16": late_share(delta_np, last=16), "seconds": time.perf_counter() - start_time}
    return Crafted(x=x_out, poison=np.sort(poison), delta=delta_np[np.argsort(poison)],
                   targets=None if targets is None else np.asarray(targets),
                   adversarial_class=None if adv is None else int(adv), stats=stats)


def collision_start(x_poison: np.ndarray, x_targets: np.ndarray, *, eps: float, late: int) -> torch.Tensor:
    """Eq. (3): the poisons' last ``late`` elements moved toward the targets' (P, L) or (P, L, c), float64."""
    x_poison = np.asarray(x_poison, np.float64)
    src = np.asarray(x_targets, np.float64)[np.arange(len(x_poison)) % len(x_targets)]
    delta = np.zeros_like(x_poison)
    delta[:, -late:] = np.clip(src[:, -late:] - x_poison[:, -late:], -eps, eps)
    return torch.as_tensor(delta)


def _detached(objective, delta: torch.Tensor):
    with torch.enable_grad():
        j, match = objective(delta)
    return j.detach(), match.detach()


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]) -> torch.Tensor:
    """Onto |delta| <= eps and low <= x + delta <= high."""
    low, high = bounds
    return torch.clamp(torch.clamp(delta, -eps, eps), low - x, high - x)


def _pick_targets(sur: Params, xa: torch.Tensor, ya: torch.Tensor, *, count: int,
                  rng: np.random.Generator, pool: str) -> tuple[np.ndarray, int]:
    """Targets: ``count`` sequences of one random source class that every surrogate gets
    right, and a random adversarial class other than the source."""
    with torch.no_grad():
        z = per_example_loss(sur, xa, ya, pool=pool)                                            # (M_s, m)
    right = (z < math.log(2)).all(0).cpu().numpy()
    classes = np.unique(ya.cpu().numpy())
    source = int(rng.choice(classes))
    adv = int(rng.choice(classes[classes != source]))
    pool = np.flatnonzero((ya.cpu().numpy() == source) & right)
    if len(pool) < count:
        pool = np.flatnonzero(ya.cpu().numpy() == source)
    return np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False)), adv


def _select(sur: Params, x: np.ndarray, y: np.ndarray, pool: np.ndarray, count: int, how: str, *,
            rng: np.random.Generator, dtype, device, readout: str) -> np.ndarray:
    """The examples to perturb: at random from ``pool``, or the largest surrogate gradients."""
    if how == "random":
        return np.sort(rng.choice(pool, size=count, replace=False))
    if how != "gradient":
        raise ValueError(f"unknown selection {how!r}; known: random, gradient")
    xs = torch.as_tensor(x[pool], dtype=dtype, device=device)
    ys = torch.as_tensor(y[pool], dtype=torch.long, device=device)
    norms = torch.stack([flat_grad(sur, xs[i:i + 1], ys[i:i + 1], pool=readout).norm(dim=1).mean()
                         for i in range(len(pool))])
    return np.sort(pool[np.argsort(-norms.cpu().numpy(), kind="stable")[:count]])
