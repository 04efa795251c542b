"""Deep diagonal-SSM classifiers (S4D-style) on sequences, for many models at once.

The model is the minimal S4D classifier (Gu, Gupta, Goel, Re, "On the Parameterization
and Initialization of Diagonal State Space Models", 2022; ``s4d.py`` of state-spaces/s4),
written for M models whose parameters are stacked along a leading axis, with the complex
parts in real arithmetic. For an input sequence x_1..x_L of c channels (x_t in R^c):

    u_t = W_enc x_t + b_enc                    (W_enc: H x c, H channels)            (1)

then ``n_layers`` times, per channel h and state mode k (N/2 complex modes):

    A_hk = -exp(log_a_re_hk) + i a_im_hk,   dt_h = exp(log_dt_h)                       (2)
    K_h[j] = 2 Re( sum_k C_hk (exp(dt_h A_hk) - 1) / A_hk * exp(dt_h A_hk j) ),
             j = 0..L-1  (zero-order hold; the conjugate modes give the factor 2)        (3)
    y_t = sum_{s<=t} K_h[t - s] u_s + D_h u_t              (causal convolution)          (4)
    z_t = GLU(W_out gelu(y_t) + b_out)                     (mixes the channels)          (5)
    u_t <- LayerNorm(u_t + z_t)                            (post-norm residual)          (6)

and the class scores of the last step (the paper's read-out, y_hat = C h_L) or of the
mean over time (S4's default):

    logits = W_dec u_L + b_dec      or      logits = W_dec (1/L sum_t u_t) + b_dec        (7)

Training minimises each model's mean cross-entropy over the examples of its mask (0/1 over
the n training examples) in each mini-batch B_t,

    L_m(t) = sum_{n in B_t} w_mn CE(logits_mn, y_n) / max(sum_{n in B_t} w_mn, 1)         (8)

with Adam and a half-cosine step-size decay for a fixed number of steps. The batches B_t
come from a stream of shuffled epochs over all n examples seeded by the model's seed
(:func:`batch_indices`), so a model's result depends only on its mask and seed, and
removing an example changes only the batches that held it. :func:`train_many` trains M
models (masks x seeds) in one vectorized computation: the convolution (4) is a batched
(L x L) Toeplitz matrix product over (model, channel), the mixing (5) a batched matrix
product over models; autograd of the summed losses gives every model its own gradient
because the models share no parameter. :func:`train_one` is the plain reference: one
model, its subset only, ``torch.optim.Adam``.

Layout: activations are (M, H, L, n), channels first and examples last, so both (4) and
(5) are plain batched GEMMs without transposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]

INITS = ("s4d-lin", "s4d-inv", "s4d-legs")

LAYER_KEYS = ("log_dt", "log_a_re", "a_im", "c", "d", "w_out", "b_out", "ln_g", "ln_b")


@dataclass(frozen=True)
class DeepSpec:
    """Architecture and initialization of the deep SSM classifier.

    Attributes
    ----------
    n_classes : int
    d_model : int, H, channels of every layer
    d_state : int, N, state size per channel (N/2 complex-conjugate pairs of modes)
    n_layers : int
    dt_min, dt_max : float, range of the log-uniform initial step sizes dt_h (S4D uses
        1e-3..1e-1 for sequences of length 1024; 1e-2..1 suits the 64 steps of the digits)
    init : one of :data:`INITS`, the initial A of every layer (:func:`initial_a`)
    pool : "last" (the last step's output, as the paper's SSM) or "mean" (over time)
    d_input : int, c, channels of the input sequences (x (n, L) is c = 1)
    """

    n_classes: int = 10
    d_model: int = 16
    d_state: int = 16
    n_layers: int = 2
    dt_min: float = 1e-2
    dt_max: float = 1.0
    init: str = "s4d-lin"
    pool: str = "last"
    d_input: int = 1

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; known: {', '.join(INITS)}")

    @property
    def modes(self) -> int:
        return max(self.d_state // 2, 1)

    def param_names(self) -> list[str]:
        names = ["enc_w", "enc_b"]
        names += [f"{i}.{k}" for i in range(self.n_layers) for k in LAYER_KEYS]
        return names + ["dec_w", "dec_b"]


@dataclass(frozen=True)
class DeepTrainConfig:
    """Mini-batch Adam (torch.optim.Adam's arithmetic) for a fixed number of steps.

    Attributes
    ----------
    epochs : int
        Passes over the n training examples: ``steps(n) = epochs * ceil(n / batch_size)``
        updates for every model, whatever its mask.
    batch_size : int
        Examples drawn per step from a seeded stream of shuffled epochs over ALL n examples
        (:func:`batch_indices`); a model averages the loss over the drawn examples its mask
        keeps, so removing an example changes only the batches that held it.
    lr : float, peak step size of the dense parameters
    ssm_lr : float, peak step size of the SSM parameters (log_dt, log_a_re, a_im), as in S4D
    schedule : "cosine" (half-cosine decay from the peak to 0 over the steps) or "constant"
    betas, eps : Adam's moment factors and denominator constant
    weight_decay : float, L2 penalty (coupled, as torch.optim.Adam) on the dense weights
    """

    epochs: int = 15
    batch_size: int = 50
    lr: float = 0.03
    ssm_lr: float = 0.03
    schedule: str = "cosine"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def steps(self, n: int) -> int:
        """Updates every model makes on a training set of ``n`` examples."""
        return self.epochs * math.ceil(n / self.batch_size)

    def factor(self, t: int, steps: int) -> float:
        """Step-size multiplier of update t = 1..steps."""
        if self.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (t - 1) / steps))


def batch_indices(*, n: int, seed: int, steps: int, batch_size: int) -> np.ndarray:
    """The examples drawn at every step: (steps, batch_size) indices into range(n).

    Concatenated seeded permutations of range(n) (shuffled epochs), cut into batches; the
    stream depends only on (n, seed), not on a model's mask.
    """
    rng = np.random.default_rng([int(seed), 0x5EED])
    need = steps * batch_size
    stream = np.concatenate([rng.permutation(n) for _ in range(math.ceil(need / n))])
    return stream[:need].reshape(steps, batch_size)


SSM_KEYS = ("log_dt", "log_a_re", "a_im")


def _is_ssm(name: str) -> bool:
    return name.split(".")[-1] in SSM_KEYS


def _decays(name: str) -> bool:
    return name.split(".")[-1] in ("enc_w", "w_out", "dec_w")


@dataclass
class DeepResult:
    """Trained models, stacked along the first axis (on the CPU).

    Attributes
    ----------
    params : dict of tensors (M, ...)
    loss : tensor (M,), final train loss (8) of every model on its own subset
    trajectory : list of params, every ``record_every`` steps (step 0 first), if asked
    """

    params: Params
    loss: torch.Tensor
    meta: dict = field(default_factory=dict)
    trajectory: list[Params] = field(default_factory=list)

    def model(self, m: int) -> Params:
        """Parameters of model m as a batch of one."""
        return {k: v[m:m + 1] for k, v in self.params.items()}


# --------------------------------------------------------------------------- init


def init_params(spec: DeepSpec, seeds, *, dtype=torch.float64, device="cpu") -> Params:
    """Initial parameters of one model per seed, stacked (M, ...).

    Every model's draws come from its own generator seeded with its seed, on the CPU in
    float64, so a model's start does not depend on its batch, device or dtype.
    """
    per_model = [_init_one(spec, int(s)) for s in seeds]
    return {k: torch.stack([p[k] for p in per_model]).to(device=device, dtype=dtype) for k in spec.param_names()}


def _init_one(spec: DeepSpec, seed: int) -> Params:
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    H, K, C, c_in = spec.d_model, spec.modes, spec.n_classes, spec.d_input

    def uniform(shape, bound):
        return (torch.rand(shape, generator=gen, dtype=f64) * 2 - 1) * bound

    bound = 1 / math.sqrt(c_in)
    p = {"enc_w": uniform((H, c_in), bound), "enc_b": uniform((H,), bound)}          # Linear(c, H)
    a_re, a_im, b = initial_a(spec.init, spec.d_state)                                # (K,), (K,), (K, 2)
    log_a_re = torch.tensor([math.log(-v) for v in a_re], dtype=f64)                  # (K,), eq. (2)
    a_im, b = torch.as_tensor(a_im), torch.as_tensor(b)
    for i in range(spec.n_layers):
        log_dt = torch.rand(H, generator=gen, dtype=f64) * (math.log(spec.dt_max) - math.log(spec.dt_min)) \
            + math.log(spec.dt_min)
        p[f"{i}.log_dt"] = log_dt                                                     # (H,)
        p[f"{i}.log_a_re"] = log_a_re.expand(H, K).clone()                           # (H, K)
        p[f"{i}.a_im"] = a_im.expand(H, K).clone()                                    # (H, K)
        c = torch.randn(H, K, 2, generator=gen, dtype=f64) * math.sqrt(0.5)           # (H, K, re/im), CN(0, 1)
        p[f"{i}.c"] = torch.stack([c[..., 0] * b[:, 0] - c[..., 1] * b[:, 1],
                                   c[..., 0] * b[:, 1] + c[..., 1] * b[:, 0]], -1)    # C B, (H, K, 2)
        p[f"{i}.d"] = torch.randn(H, generator=gen, dtype=f64)                        # (H,)
        p[f"{i}.w_out"] = uniform((2 * H, H), 1 / math.sqrt(H))                       # (2H, H)
        p[f"{i}.b_out"] = uniform((2 * H,), 1 / math.sqrt(H))                         # (2H,)
        p[f"{i}.ln_g"] = torch.ones(H, dtype=f64)
        p[f"{i}.ln_b"] = torch.zeros(H, dtype=f64)
    p["dec_w"] = uniform((C, H), 1 / math.sqrt(H))                                    # (C, H)
    p["dec_b"] = uniform((C,), 1 / math.sqrt(H))                                      # (C,)
    return p


def initial_a(init: str, d_state: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The initial diagonal A and input vector B of one channel: a_re (K,), a_im (K,), b (K, 2).

    K = N/2 modes (N = ``d_state``), each standing for a complex-conjugate pair; the model
    keeps the mode of positive imaginary part (eq. (3)'s factor 2 adds its conjugate). In
    the parametrization (2), log_a_re = log(-a_re) and a_im are stored as they are: the
    maps below are exact. B is not a parameter of (2)-(3): the kernel sees only the
    products C_k B_k, so the model starts from c_k = C_k B_k with C_k ~ CN(0, 1) and trains
    that product (the minimal S4D of ``s4d.py``, which fixes B = 1).

    ``s4d-lin``   S4D-Lin (Gu et al. 2022, Sec. 4): A_n = -1/2 + i pi n, B_n = 1 (the
                  default, formerly named "lin"; "inv" is now ``s4d-inv``).
    ``s4d-inv``   S4D-Inv (ibid.): A_n = -1/2 + i (N/pi) (N/(2n+1) - 1), B_n = 1.
    ``s4d-legs``  S4D-LegS (ibid.; S4, Gu, Goel, Re, ICLR 2022, Sec. 3): the eigenvalues
                  of the normal part of HiPPO-LegS,
                  A^N = A + P P^T = -I/2 + S,  S_nk = -sqrt(2n+1) sqrt(2k+1) / 2 (n > k),
                  S = -S^T, P_n = sqrt(n + 1/2): A_n = -1/2 + i lambda_n with lambda_n > 0
                  the eigenvalues of -i S (unit eigenvectors v_n), and B_n = v_n^* B with
                  B_k = sqrt(2k+1) HiPPO-LegS's input vector. The phase of each v_n is
                  free; it is chosen so that B_n = |v_n^* B| >= 0 (C ~ CN(0, 1) is
                  circularly symmetric, so the law of C_n B_n depends on |B_n| alone).
                  S4's own code also clips Im B_n to [-2, 2] in its phase convention;
                  that is not done here. The conjugate half (lambda < 0, conj(B_n)) gives
                  the same kernel with conj(C), which has C's law.

    n = 0..K-1. Every init here has Re A = -1/2 (log_a_re = log(1/2)).
    """
    N, K = d_state, max(d_state // 2, 1)
    n = np.arange(K, dtype=np.float64)
    b = np.stack([np.ones(K), np.zeros(K)], -1)                                        # (K, 2)
    if init == "s4d-lin":
        a_im = np.pi * n
    elif init == "s4d-inv":
        a_im = (N / np.pi) * (N / (2 * n + 1) - 1)
    elif init == "s4d-legs":
        a_im, b = _legs_modes(N, K)
    else:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INITS)}")
    return np.full(K, -0.5), a_im, b


def _legs_modes(N: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Imaginary parts (K,) and |projected B| (K, 2) of the normal part of HiPPO-LegS, size N."""
    r = np.sqrt(2 * np.arange(N, dtype=np.float64) + 1)                               # B, (N,)
    lower = np.tril(-np.outer(r, r) / 2, -1)
    skew = lower - lower.T                                                             # S, (N, N)
    lam, vec = np.linalg.eigh(-1j * skew)                                              # ascending, (N,), (N, N)
    top = np.argsort(lam, kind="stable")[N - K:]                                       # the K largest (> 0)
    b = np.abs(vec[:, top].conj().T @ r)                                               # |V^* B|, (K,)
    return lam[top], np.stack([b, np.zeros(K)], -1)


# --------------------------------------------------------------------------- model


def ssm_kernel(params: Params, layer: int, length: int) -> torch.Tensor:
    """The convolution kernel (3) of every channel of ``layer``: (M, H, length), in reals.

    With A = ar + i ai (ar < 0), z = dt A, E_j = exp(z j) = exp(j z_re) (cos j z_im + i sin j z_im)
    and the ZOH factor (exp(z) - 1) / A, K[j] = 2 Re(C' E_j), C' = C (exp(z) - 1) / A.
    """
    p = f"{layer}."
    dt = torch.exp(params[p + "log_dt"]).unsqueeze(-1)                      # (M, H, 1)
    ar = -torch.exp(params[p + "log_a_re"])                                 # (M, H, K)
    ai = params[p + "a_im"]                                                 # (M, H, K)
    zr, zi = dt * ar, dt * ai                                               # dt A, (M, H, K)
    # (exp(z) - 1) / A = (er + i ei) (ar - i ai) / |A|^2
    er, ei = torch.exp(zr) * torch.cos(zi) - 1, torch.exp(zr) * torch.sin(zi)    # exp(z) - 1
    den = ar * ar + ai * ai
    fr, fi = (er * ar + ei * ai) / den, (ei * ar - er * ai) / den           # (M, H, K)
    cr, ci = params[p + "c"][..., 0], params[p + "c"][..., 1]
    gr, gi = cr * fr - ci * fi, cr * fi + ci * fr                           # C', (M, H, K)
    j = torch.arange(length, dtype=dt.dtype, device=dt.device)              # (L,)
    mag = torch.exp(zr.unsqueeze(-1) * j)                                   # (M, H, K, L)
    ang = zi.unsqueeze(-1) * j
    return 2 * (mag * (gr.unsqueeze(-1) * torch.cos(ang) - gi.unsqueeze(-1) * torch.sin(ang))).sum(-2)


def toeplitz(kernel: torch.Tensor) -> torch.Tensor:
    """Lower-triangular Toeplitz matrices T[t, s] = K[t - s] (t >= s): (..., L) -> (..., L, L)."""
    L = kernel.shape[-1]
    t = torch.arange(L, device=kernel.device)
    lag = t[:, None] - t[None, :]                                           # (L, L)
    causal = (lag >= 0).to(kernel.dtype)
    return kernel[..., lag.clamp_min(0)] * causal


def _layer_norm(u: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of (M, H, L, n), per-model gain and bias (M, H)."""
    centred = u - u.mean(1, keepdim=True)
    inv = torch.rsqrt((centred * centred).mean(1, keepdim=True) + 1e-5)     # (M, 1, L, n)
    return centred * inv * g[:, :, None, None] + b[:, :, None, None]


def features(params: Params, x: torch.Tensor, *, pool: str = "last") -> torch.Tensor:
    """The pooled representation of the last layer, eq. (7): (M, H, n).

    ``x`` is (n, L) (one channel) or (n, L, c), read by every model, or (M, n, L, c), one
    batch per model; ``pool`` is "last" (the last step) or "mean" (over time).
    """
    M, H = params["enc_w"].shape[:2]
    u = _encode(params, x)                                                  # (M, H, L, n), eq. (1)
    L, n = u.shape[-2:]
    for i in range(_n_layers(params)):
        p = f"{i}."
        T = toeplitz(ssm_kernel(params, i, L))                              # (M, H, L, L)
        y = T @ u + params[p + "d"][:, :, None, None] * u                   # (M, H, L, n), eq. (4)
        y = F.gelu(y).reshape(M, H, L * n)
        z = params[p + "w_out"] @ y + params[p + "b_out"][:, :, None]       # (M, 2H, L n)
        z = F.glu(z, dim=1).reshape(M, H, L, n)                             # (M, H, L, n), eq. (5)
        u = _layer_norm(u + z, params[p + "ln_g"], params[p + "ln_b"])      # eq. (6)
    return u[:, :, -1] if pool == "last" else u.mean(2)                   # (M, H, n)


def _encode(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Eq. (1), u = W_enc x + b_enc of every model: (M, H, L, n)."""
    w, b = params["enc_w"], params["enc_b"][:, :, None, None]               # (M, H, c), (M, H, 1, 1)
    x = x.to(w.dtype)
    if x.ndim == 2:
        x = x.unsqueeze(-1)                                                 # (n, L, 1)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} channels, the model reads {w.shape[-1]}")
    xt = x.movedim(-1, -3).transpose(-1, -2)                                # (c, L, n) or (M, c, L, n)
    if xt.ndim == 3:
        xt = xt.unsqueeze(0)                                                # (1, c, L, n)
    if w.shape[-1] == 1:
        return w[:, :, :, None] * xt + b                                    # (M, H, L, n), one channel
    c, L, n = xt.shape[-3:]
    return (w @ xt.reshape(xt.shape[0], c, L * n)).reshape(-1, w.shape[1], L, n) + b


def logits(params: Params, x: torch.Tensor, *, pool: str = "last") -> torch.Tensor:
    """Class scores (7) of every model for every sequence: (M, n, C)."""
    h = features(params, x, pool=pool)                                               # (M, H, n)
    return (params["dec_w"] @ h).transpose(1, 2) + params["dec_b"][:, None, :]


def per_example_loss(params: Params, x: torch.Tensor, y: torch.Tensor, *, pool: str = "last") -> torch.Tensor:
    """Cross-entropy of every model on every example: (M, n).

    ``x`` (n, L) or (n, L, c) with ``y`` (n,), or per-model batches x (M, n, L, c) with y (M, n).
    """
    z = logits(params, x, pool=pool)                                        # (M, n, C)
    return -torch.log_softmax(z, -1).gather(-1, y.expand(z.shape[0], -1).unsqueeze(-1)).squeeze(-1)


def _n_layers(params: Params) -> int:
    return sum(1 for k in params if k.endswith(".log_dt"))


# --------------------------------------------------------------------------- training


def train_many(spec: DeepSpec, x, y, masks, seeds, config: DeepTrainConfig, *, dtype=torch.float32,
               device="cpu", chunk: int = 0, record_every: int = 0, init: Params | None = None) -> DeepResult:
    """Train M models at once, model m on the examples ``masks[m]`` from seed ``seeds[m]``.

    Parameters
    ----------
    spec : DeepSpec
    x : array (n, L) or (n, L, c), float sequences of c = ``spec.d_input`` channels
    y : array (n,), int labels in [0, n_classes)
    masks : array (M, n) of 0/1 (or bool); every row keeps at least one example
    seeds : sequence of M ints, each model's initialization and batch stream
    config : DeepTrainConfig
    dtype, device : of the computation
    chunk : int
        Models trained in one vectorized computation (0: all M); chunks run one after the
        other, and a model's result does not depend on the chunking.
    record_every : int
        If positive, keep every model's parameters each ``record_every`` steps.
    init : dict of tensors (M, ...), optional
        Initial parameters instead of ``init_params(spec, seeds)``.

    Returns
    -------
    DeepResult
        Model m equals :func:`train_one` with ``masks[m]`` and ``seeds[m]`` (up to rounding).
    """
    w = np.asarray(masks, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(x):
        raise ValueError(f"masks must have shape (M, {len(x)}), got {w.shape}")
    if len(seeds) != w.shape[0]:
        raise ValueError(f"{w.shape[0]} masks but {len(seeds)} seeds")
    if (w.sum(1) <= 0).any():
        raise ValueError("every mask must keep at least one example")
    M = w.shape[0]
    size = chunk or M
    x_t = _sequences(x, dtype=dtype, device=device)                                # (n, L, c)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)          # (n,)
    parts = []
    for lo in range(0, M, size):
        sub = None if init is None else {k: v[lo:lo + size] for k, v in init.items()}
        parts.append(_train_chunk(spec, x_t, y_t, w[lo:lo + size], list(seeds)[lo:lo + size], config,
                                  record_every=record_every, init=sub))
    params = {k: torch.cat([r.params[k] for r in parts]) for k in parts[0].params}
    trajectory = [{k: torch.cat([r.trajectory[t][k] for r in parts]) for k in params}
                  for t in range(len(parts[0].trajectory))]
    return DeepResult(params=params, loss=torch.cat([r.loss for r in parts]),
                      meta={"device": str(device), "dtype": str(dtype).removeprefix("torch.")},
                      trajectory=trajectory)


def _sequences(x, *, dtype, device) -> torch.Tensor:
    """x (n, L) or (n, L, c) as a tensor (n, L, c), so that x[b] of batches b (M, B) is 4-D."""
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    return x_t.unsqueeze(-1) if x_t.ndim == 2 else x_t


def _train_chunk(spec, x, y, w, seeds, config, *, record_every, init) -> DeepResult:
    dtype, device = x.dtype, x.device
    n = x.shape[0]
    steps = config.steps(n)
    w_t = torch.as_tensor(w, dtype=dtype, device=device)                           # (M, n)
    idx = torch.as_tensor(np.stack([batch_indices(n=n, seed=s, steps=steps, batch_size=config.batch_size)
                                    for s in seeds], 1), device=device)            # (steps, M, B)
    start = init_params(spec, seeds, dtype=dtype, device=device) if init is None else \
        {k: v.to(device=device, dtype=dtype) for k, v in init.items()}
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    adam = _StackedAdam(params, config)
    trajectory = []
    for t in range(1, steps + 1):
        if record_every and (t - 1) % record_every == 0:
            trajectory.append({k: v.detach().cpu().clone() for k, v in params.items()})
        b = idx[t - 1]                                                             # (M, B)
        wb = w_t.gather(1, b)                                                      # (M, B)
        loss = ((per_example_loss(params, x[b], y[b], pool=spec.pool) * wb).sum(1)
                / wb.sum(1).clamp_min(1.0))                                                # (M,), eq. (8)
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        adam.step(dict(zip(params, grads)), t, config.factor(t, steps))
    final = params_loss({k: v.detach() for k, v in params.items()}, x, y, w_t, pool=spec.pool)
    return DeepResult(params={k: v.detach().cpu() for k, v in params.items()}, loss=final.cpu(),
                      trajectory=trajectory)


@torch.no_grad()
def params_loss(params: Params, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, pool: str = "last",
                batch: int = 512) -> torch.Tensor:
    """Loss (8) of every model on its whole subset: (M,)."""
    total = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    for lo in range(0, x.shape[0], batch):
        total += (per_example_loss(params, x[lo:lo + batch], y[lo:lo + batch], pool=pool) * w[:, lo:lo + batch]).sum(1)
    return total / w.sum(1)


class _StackedAdam:
    """torch.optim.Adam (coupled L2 decay) applied elementwise to stacked parameters."""

    def __init__(self, params: Params, config: DeepTrainConfig):
        self.params, self.config = params, config
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    @torch.no_grad()
    def step(self, grads: Params, t: int, factor: float = 1.0) -> None:
        c = self.config
        b1, b2 = c.betas
        bc1, bc2_sqrt = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        for k, p in self.params.items():
            g = grads[k]
            if c.weight_decay and _decays(k):
                g = g.add(p, alpha=c.weight_decay)
            lr = (c.ssm_lr if _is_ssm(k) else c.lr) * factor
            self.m[k].lerp_(g, 1 - b1)
            self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v[k].sqrt() / bc2_sqrt).add_(c.eps)
            p.addcdiv_(self.m[k], denom, value=-lr / bc1)


def train_one(spec: DeepSpec, x, y, mask, seed: int, config: DeepTrainConfig, *, dtype=torch.float64,
              device="cpu") -> DeepResult:
    """Train one model on the examples ``mask`` from ``seed``: the plain reference loop.

    Every step takes the kept examples of the step's batch (:func:`batch_indices`), their
    mean cross-entropy (zero if none is kept), and a ``torch.optim.Adam`` step (dense and
    SSM parameter groups, the step size scheduled by ``config.factor``). Returns a
    :class:`DeepResult` holding one model.
    """
    keep = np.asarray(mask, bool)
    x_all = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    y_all = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    n = x_all.shape[0]
    steps = config.steps(n)
    stream = batch_indices(n=n, seed=seed, steps=steps, batch_size=config.batch_size)
    start = init_params(spec, [seed], dtype=dtype, device=device)
    params = {k: v[0].clone().requires_grad_(True) for k, v in start.items()}
    groups = []
    for ssm in (False, True):
        for decay in (False, True):
            ps = [v for k, v in params.items() if _is_ssm(k) == ssm and _decays(k) == decay]
            if ps:
                groups.append({"params": ps, "lr": config.ssm_lr if ssm else config.lr,
                               "weight_decay": config.weight_decay if decay else 0.0})
    for g in groups:
        g["base"] = g["lr"]
    opt = torch.optim.Adam(groups, betas=config.betas, eps=config.eps, foreach=False)

    def loss_on(rows: np.ndarray) -> torch.Tensor:
        z = logits({k: v.unsqueeze(0) for k, v in params.items()}, x_all[rows], pool=spec.pool)[0]   # (b, C)
        return F.cross_entropy(z, y_all[rows])

    for t in range(1, steps + 1):
        rows = stream[t - 1][keep[stream[t - 1]]]
        opt.zero_grad()
        if len(rows):
            loss_on(rows).backward()
        else:
            for p in params.values():
                p.grad = torch.zeros_like(p)
        for g in groups:
            g["lr"] = g["base"] * config.factor(t, steps)
        opt.step()
    with torch.no_grad():
        final = loss_on(np.flatnonzero(keep)).reshape(1)
    return DeepResult(params={k: v.detach().unsqueeze(0).cpu() for k, v in params.items()}, loss=final.cpu())


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(params: Params, x, y, *, pool: str = "last", device="cpu", dtype=torch.float32,
             chunk: int = 64) -> dict[str, torch.Tensor]:
    """Cross-entropy and accuracy of every model on (x, y): dict of (M,) tensors, and the
    per-example losses ``losses`` (M, n)."""
    x_t = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    M = next(iter(params.values())).shape[0]
    losses, correct = [], []
    for lo in range(0, M, chunk):
        p = {k: v[lo:lo + chunk].to(device=device, dtype=dtype) for k, v in params.items()}
        z = logits(p, x_t, pool=pool)                                       # (m, n, C)
        logp = torch.log_softmax(z, -1)
        losses.append(-logp.gather(-1, y_t.expand(z.shape[0], -1).unsqueeze(-1)).squeeze(-1).cpu())
        correct.append((z.argmax(-1) == y_t).cpu())
    losses_t, correct_t = torch.cat(losses), torch.cat(correct)
    return {"loss": losses_t.double().mean(1), "accuracy": correct_t.double().mean(1), "losses": losses_t.double(),
            "correct": correct_t}


def mean_kernel(params: Params, *, layer: int = 0, length: int) -> torch.Tensor:
    """The mean over channels of |K_h[j]| of ``layer`` (3): (M, length), for plots."""
    return ssm_kernel(params, layer, length).abs().mean(1)
