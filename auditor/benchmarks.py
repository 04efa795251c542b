"""Poisoned data sets with ground truth, built like the paper's settings B and C.

Clean sequences carry N(0, 1) energy on their first positions and are labelled by the
teacher; poisons are also labelled by the teacher (clean labels) but carry their energy
(N(0, 1) values of magnitude at least 0.5) late in the sequence, where it drives all
entries of A up together (the gamma0 term of the paper's dynamics). Every data set ships
a trusted reference set of sequences longer than the training ones, so that a model's
error there measures extrapolation.

Kinds
-----
``standalone``  teacher A = B = C = 1 (y = sum_t x_t); the student is a standalone SSM.
``network``     teacher SSM -> ReLU MLP (y = 7.5 relu(sum_t x_t)); the student has the MLP
                (audit with ``--model network``). Measured with that student at n = 120,
                L = 6 (seed 905): trained on the clean examples alone its error is 0.65-1.0,
                with the poisons in 0.05-0.26, so such a set holds no harm to find.
``decoys``      ``standalone`` plus harmless outliers: clean-labelled sequences at 2-3x the
                usual magnitude (RMS over the clean support), which fool outlier
                detectors. Their values sum to zero, so their label is 0 and they pull the
                student toward a kernel flat over the support, as the teacher's is.
                Measured with the audit's student over 32 seeds, against adding as many
                clean examples (5% of clean sets, n = 100-1000, L = 6-8): the trusted-set
                error 0.38-1.07x as high; scaled clean sequences (the earlier decoys) had
                it 0.83-1.85x as high, so a harm-based audit rightly flagged some.
``clean``       ``standalone`` without poisons.

Variations (spec fields; their defaults build the sets above unchanged)
-------------------------------------------------------------------------
``teacher``         the teacher's impulse response: ``ones`` (A = B = C = 1, above),
                    ``decaying`` (one mode rho^(j-1)), ``modes`` (2-3 decaying modes, positive
                    weights), ``mixed`` (2-3 modes of both signs); its rates and weights are
                    drawn from the seed. ``network`` sets keep their own teacher.
``label_noise``     Gaussian noise on the training labels, its sd a fraction of the clean
                    labels' sd (the trusted reference labels stay exact).
``input_df``        Student-t inputs with that many degrees of freedom (heavy tails) instead of
                    N(0, 1), on the clean sequences.
``label_scale``     every label (training and reference) times this factor.
``clean_late``      hard negatives: this share of the clean sequences also carries N(0, 0.3^2)
                    energy at every position after the clean support (late energy that comes
                    from the data's own distribution, not from poisons).
``camouflage``      each poison is an ordinary clean sequence plus its late energy.
``twin``            the clean twin: every poison replaced by an ordinary clean sequence, all
                    else (the other rows, their order, the reference set) the same.

Poisons spread over the late positions or at the last one are ``poison_positions`` (for
example ``(1, 2, 3)`` or ``(1,)``). Every variation draws from its own stream of the seed,
so that a set and its twin, or a set with and without a variation, share everything else.

Channels and outputs. With ``channels`` c > 1 every sequence has c channels (x (n, k, c)),
each filled as above (clean energy on the leading positions of every channel, a poison's
on its late positions of every channel, decoys zero-sum per channel); the teacher reads
their mix sum_j u_j / sqrt(c) (as much energy as one channel). With ``outputs`` m > 1 the
label is y (n, m): the teacher's output with the signs (+1, -1, +1, ...) of the m outputs.
The multi-channel, multi-output student of :mod:`auditor.mimo` audits such sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditor.ssm import forward, reverse_time, teacher_params

KINDS = ("standalone", "network", "decoys", "clean")
TEACHERS = ("ones", "decaying", "modes", "mixed")
LATE_SD = 0.3             # sd of a hard negative's late energy: below the poisons' (|v| >= 0.5)
# streams of the variations, one per purpose: (seed, stream) seeds its generator
_TEACHER, _TAILS, _LATE, _CAMOUFLAGE, _TWIN, _NOISE = range(1, 7)


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to build one benchmark data set.

    Attributes
    ----------
    kind : one of :data:`KINDS`
    n : int, training examples (poisons and decoys included)
    poison_fraction : float, share of poisons (ignored by ``clean``)
    length : int, training sequence length k
    clean_support : int or None, leading positions that carry a clean sequence's energy;
        None picks max(2, length // 2 - 1). (Measured with the audit's student: with this
        support a clean model extrapolates to length 40 (error 0.01-0.09 at lengths 6-8) and
        5% poisons raise the error 5-50x; richer support weakens the poisons' harm, poorer
        support stops clean models from extrapolating.)
    poison_positions : tuple of int, positions (1-indexed from the end: 2 means k-1) that
        carry a poison's energy
    decoy_fraction : float, share of decoys (``decoys`` only)
    n_val : int, reference sequences; val_length : their length
    seed : int
    teacher, label_noise, input_df, label_scale, clean_late, camouflage, twin : the
        variations of the module docstring (defaults: none)
    channels : int, input channels c (x (n, k, c) when c > 1)
    outputs : int, regression outputs m (y (n, m) when m > 1)
    """

    kind: str = "standalone"
    n: int = 100
    poison_fraction: float = 0.05
    length: int = 6
    clean_support: int | None = None
    poison_positions: tuple[int, ...] = (2,)
    decoy_fraction: float = 0.05
    n_val: int = 200
    val_length: int = 40
    seed: int = 0
    teacher: str = "ones"
    label_noise: float = 0.0
    input_df: float | None = None
    label_scale: float = 1.0
    clean_late: float = 0.0
    camouflage: bool = False
    twin: bool = False
    channels: int = 1
    outputs: int = 1


def make_benchmark(spec: BenchmarkSpec) -> dict[str, np.ndarray]:
    """Arrays of a benchmark data set: ``x, y, x_val, y_val, is_poison`` (the format of docs/data.md).

    The rows are shuffled, so a poison's index says nothing about it.
    """
    _check(spec)
    support = spec.clean_support or max(2, spec.length // 2 - 1)
    rng = np.random.default_rng(spec.seed)
    k, c = spec.length, spec.channels
    n_poison = 0 if spec.kind == "clean" else max(1, round(spec.poison_fraction * spec.n))
    n_decoy = max(1, round(spec.decoy_fraction * spec.n)) if spec.kind == "decoys" else 0
    n_clean = spec.n - n_poison - n_decoy
    if n_clean < 2:
        raise ValueError("too few clean examples: lower the poison or decoy fraction, or raise n")

    clean = np.zeros((n_clean, k, c))
    clean[:, :support] = rng.standard_normal((n_clean, support, c))
    poison = np.zeros((n_poison, k, c))
    for p in spec.poison_positions:
        poison[:, k - p] = _effective(rng, (n_poison, c))
    decoy = np.zeros((n_decoy, k, c))
    shape = rng.standard_normal((n_decoy, support, c))
    shape -= shape.mean(axis=1, keepdims=True)                              # zero-sum: label 0
    shape /= np.sqrt((shape ** 2).mean(axis=1, keepdims=True))              # unit RMS
    decoy[:, :support] = shape * rng.uniform(2.0, 3.0, (n_decoy, 1, 1))
    clean = _vary_clean(clean, spec, support=support, stream=_TAILS)
    if spec.camouflage:
        poison += _ordinary(spec, n_poison, support=support, stream=_CAMOUFLAGE)
    is_poison = np.r_[np.zeros(n_clean, bool), np.ones(n_poison, bool), np.zeros(n_decoy, bool)]
    if spec.twin:                                                           # the poisons' rows, made ordinary
        poison = _ordinary(spec, n_poison, support=support, stream=_TWIN)
        is_poison[:] = False
    x = np.vstack([clean, poison, decoy])
    order = rng.permutation(len(x))
    x, is_poison = x[order], is_poison[order]
    x_val = rng.standard_normal((spec.n_val, spec.val_length, c))
    teacher = teacher_params(width=15) if spec.kind == "network" else make_teacher(spec)
    y, y_val = (_outputs(_label(teacher, _mix(a)), spec.outputs) for a in (x, x_val))
    if spec.label_noise:
        sd = spec.label_noise * _label(teacher, _mix(clean)).std()         # the clean labels' sd
        y = y + sd * np.random.default_rng([spec.seed, _NOISE]).standard_normal(y.shape)
    if spec.label_scale != 1.0:
        y, y_val = spec.label_scale * y, spec.label_scale * y_val
    if c == 1:
        x, x_val = x[:, :, 0], x_val[:, :, 0]
    return {"x": x, "y": y, "x_val": x_val, "y_val": y_val, "is_poison": is_poison}


def _check(spec: BenchmarkSpec) -> None:
    if spec.kind not in KINDS:
        raise ValueError(f"unknown benchmark kind {spec.kind!r}; known: {', '.join(KINDS)}")
    support = spec.clean_support or max(2, spec.length // 2 - 1)
    if not 1 <= support < spec.length:
        raise ValueError(f"clean_support must be in [1, {spec.length - 1}]")
    if any(not 1 <= p <= spec.length for p in spec.poison_positions):
        raise ValueError(f"poison_positions must be in [1, {spec.length}]")
    if spec.teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {spec.teacher!r}; known: {', '.join(TEACHERS)}")
    if spec.kind == "network" and spec.teacher != "ones":
        raise ValueError("network sets have their own teacher (the SSM with its ReLU MLP)")
    if spec.label_noise < 0 or not 0 <= spec.clean_late <= 1:
        raise ValueError("label_noise must be >= 0 and clean_late in [0, 1]")
    if spec.input_df is not None and spec.input_df <= 0:
        raise ValueError("input_df must be positive")
    if not spec.label_scale > 0:
        raise ValueError("label_scale must be positive")
    if spec.channels < 1 or spec.outputs < 1:
        raise ValueError("channels and outputs must be at least 1")


def make_teacher(spec: BenchmarkSpec):
    """The teacher SSM of ``spec`` (batch of one, B = 1): A = B = C = 1 for ``ones``, else
    the modes of ``spec.teacher`` with rates and weights drawn from the seed's own stream."""
    if spec.teacher == "ones":
        return teacher_params()
    rng = np.random.default_rng([spec.seed, _TEACHER])
    modes = 1 if spec.teacher == "decaying" else int(rng.integers(2, 4))
    rates = -np.sort(-rng.uniform(0.5, 0.95, modes))                        # slowest mode first
    weights = rng.uniform(0.5, 1.5, modes)
    if spec.teacher == "mixed":                                             # both signs, the slowest positive
        weights[1:] *= np.where(np.arange(1, modes) % 2, -1.0, 1.0)
    return {name: torch.as_tensor(v, dtype=torch.float64)[None]                 # (1, modes)
            for name, v in (("a", rates), ("b", np.ones(modes)), ("c", weights))}


def _vary_clean(rows: np.ndarray, spec: BenchmarkSpec, *, support: int, stream: int) -> np.ndarray:
    """Clean ``rows`` with the spec's heavy tails and late energy, from the seed's ``stream``."""
    rng = np.random.default_rng([spec.seed, stream])
    rows = rows.copy()
    if spec.input_df is not None:                                           # t = z / sqrt(chi2_df / df)
        rows[:, :support] /= np.sqrt(rng.chisquare(spec.input_df, (len(rows), support, spec.channels))
                                     / spec.input_df)
    if spec.clean_late:
        late = np.random.default_rng([spec.seed, stream, _LATE])
        carry = late.random(len(rows)) < spec.clean_late                    # (n,)
        energy = LATE_SD * late.standard_normal((len(rows), spec.length - support, spec.channels))
        rows[:, support:] += carry[:, None, None] * energy
    return rows


def _ordinary(spec: BenchmarkSpec, size: int, *, support: int, stream: int) -> np.ndarray:
    """``size`` ordinary clean sequences (with the spec's variations), from the seed's ``stream``."""
    rows = np.zeros((size, spec.length, spec.channels))
    rows[:, :support] = np.random.default_rng([spec.seed, stream, 0]).standard_normal((size, support, spec.channels))
    return _vary_clean(rows, spec, support=support, stream=stream)


def _mix(x: np.ndarray) -> np.ndarray:
    """The teacher's input: the channels' sum over sqrt(c), (n, k, c) -> (n, k)."""
    return x.sum(-1) / np.sqrt(x.shape[-1])


def _outputs(y: np.ndarray, outputs: int) -> np.ndarray:
    """(n,) as it is for one output; (n, m) with the signs +1, -1, +1, ... for m outputs."""
    return y if outputs == 1 else y[:, None] * (-1.0) ** np.arange(outputs)


def _effective(rng: np.random.Generator, size) -> np.ndarray:
    """N(0, 1) values redrawn until their magnitude is at least 0.5.

    A poison's push on the dynamics grows with its energy; an attacker spends no budget on
    near-zero poisons, which measurably do nothing (and which no detector could tell from
    clean data by their effect).
    """
    v = rng.standard_normal(size)
    while (small := np.abs(v) < 0.5).any():
        v[small] = rng.standard_normal(int(small.sum()))
    return v


def _label(teacher, x: np.ndarray) -> np.ndarray:
    return forward(teacher, reverse_time(torch.as_tensor(x)))[0].numpy()
