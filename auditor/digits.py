"""Real sequence data that ships with scikit-learn: the 8x8 digits read as pixel sequences.

``sklearn.datasets.load_digits`` holds 1797 images of handwritten digits (10 classes, about
180 each; UCI "Optical Recognition of Handwritten Digits", test part), with pixel values
0..16. Read row by row, each image is a sequence of 64 steps with one channel, values
scaled to [0, 1]: the last sequence elements are the bottom row of the image, as in the
pixel-sequence reading of CIFAR-10 in the paper's real-data experiment.

No other data set shipped with the installed packages is a sequence set (scikit-learn's
other bundled sets are tabular, SciPy's ECG record is downloaded on first use), so digits
is the one offline real sequence set here.

:func:`split_digits` draws disjoint, class-stratified parts:

``train``     the training set that an attacker poisons and the audit examines
``trusted``   the defender's trusted reference split (``x_val``, ``y_val`` of the data set)
``attacker``  the attacker's own clean data (crafting may use it; the defender never does)
``test``      the rest, held out: harm is measured there, apart from the audit's data
"""

from __future__ import annotations

import numpy as np

LENGTH = 64
CLASSES = 10


def load_digits_sequences() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as sequences: x float64 (1797, 64) in [0, 1], y int64 (1797,)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.data, np.float64) / 16.0, np.asarray(data.target, np.int64)


def split_digits(*, seed: int = 0, n_train: int = 600, n_trusted: int = 300,
                 n_attacker: int = 300) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint class-stratified parts ``train``, ``trusted``, ``attacker``, ``test``.

    Parameters
    ----------
    seed : int, the draw
    n_train, n_trusted, n_attacker : int, sizes; ``test`` gets the rest (may be empty)

    Returns
    -------
    dict name -> (x (m, 64), y (m,)); rows of each part in a seeded random order.
    """
    x, y = load_digits_sequences()
    sizes = {"train": n_train, "trusted": n_trusted, "attacker": n_attacker}
    if min(sizes.values()) < CLASSES or sum(sizes.values()) > len(x):
        raise ValueError(f"split sizes {sizes} need at least {CLASSES} each and at most {len(x)} in all")
    rng = np.random.default_rng(seed)
    order = _stratified_order(y, rng)
    parts, start = {}, 0
    for name, size in sizes.items():
        idx = np.sort(order[start:start + size])
        parts[name] = idx[rng.permutation(size)]
        start += size
    parts["test"] = np.sort(order[start:])
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, ordered so that every prefix holds the classes in nearly equal shares."""
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        keys[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)      # position within the class
    return np.argsort(keys + 1e-9 * rng.random(len(y)), kind="stable")


def digits_attack(**overrides):
    """The attack of ``auditor make-benchmark --kind digits``
    (:class:`auditor.crafting.CraftConfig`).

    Targeted at one sequence of the attacker's split; 5% of the training set (about half of
    the adversarial class) carries a late collision (eq. (3) of :mod:`auditor.crafting`):
    the last 48 of 64 elements (the bottom six pixel rows) moved toward the target's with
    eps = 1, so the poisons are visibly hybrid. Measured with ``benchmarks/digits_harm.py``
    (6 victims per seed): the target goes to the adversarial class in 6/6 victims on seeds
    0 and 2 and in 1/6 on seed 1 (its cross-entropy rises 270x there). At the paper's
    eps = 16/255, with gradient matching at any eps up to 1, and with collisions on the last
    32 elements at eps 0.5, retrained victims were harmed at most in 1 of 6 (seed 0).
    """
    from auditor.crafting import CraftConfig

    base = {"mode": "targeted", "fraction": 0.05, "eps": 1.0, "targets": 1, "start": "collision", "steps": 0,
            "late": 48}
    return CraftConfig(**{**base, **overrides})


def make_digits_benchmark(*, seed: int = 0, n_train: int = 600, n_trusted: int = 300, n_attacker: int = 300,
                          attack=None, device: str = "cpu") -> dict[str, np.ndarray]:
    """A poisoned digits data set with ground truth, in the dataset contract.

    Parameters
    ----------
    seed : int, the split and the attacker's randomness
    n_train, n_trusted, n_attacker : sizes of the parts (:func:`split_digits`)
    attack : CraftConfig, default :func:`digits_attack`
    device : where the attacker's surrogates train

    Returns
    -------
    dict with ``x`` (n_train, 64) and int ``y`` (the poisoned training set, labels
    unchanged), ``x_val``/``y_val`` and ``is_poison``. For a ``targeted`` attack the
    reference set is the attacked sequences with their true labels (the audit's outcome is
    then the target loss); for ``untargeted`` it is the trusted split.
    """
    from auditor.crafting import craft
    from auditor.deep import DeepSpec, DeepTrainConfig

    attack = attack or digits_attack()
    parts = split_digits(seed=seed, n_train=n_train, n_trusted=n_trusted, n_attacker=n_attacker)
    (x, y), (x_tr, y_tr), (x_at, y_at) = parts["train"], parts["trusted"], parts["attacker"]
    crafted = craft(x=x, y=y, spec=DeepSpec(n_classes=CLASSES), train=DeepTrainConfig(), config=attack,
                    x_attack=x_at, y_attack=y_at, seed=seed, device=device)
    is_poison = np.zeros(len(x), bool)
    is_poison[crafted.poison] = True
    if crafted.targets is not None:
        x_val, y_val = x_at[crafted.targets], y_at[crafted.targets]
    else:
        x_val, y_val = x_tr, y_tr
    return {"x": crafted.x, "y": y, "x_val": x_val, "y_val": y_val, "is_poison": is_poison}
