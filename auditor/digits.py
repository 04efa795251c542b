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

(:func:`auditor.poisoning.stratified_split`.)
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
    from auditor.poisoning import stratified_split

    x, y = load_digits_sequences()
    parts = stratified_split(y, {"train": n_train, "trusted": n_trusted, "attacker": n_attacker}, seed=seed)
    return {name: (x[idx], y[idx]) for name, idx in parts.items()}


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
    unchanged), ``x_val``/``y_val``, ``is_poison``, ``x_test``/``y_test`` (the rest of the
    digits) and, when targeted, ``x_target``/``y_target``
    (:func:`auditor.poisoning.poisoned_benchmark`). ``x_val`` is the trusted split; a
    targeted attack is audited in forensics mode (``AuditConfig(mode="forensics")``), whose
    models are scored on the target (the audit's outcome is then the target loss).
    """
    from auditor.poisoning import poisoned_benchmark

    parts = split_digits(seed=seed, n_train=n_train, n_trusted=n_trusted, n_attacker=n_attacker)
    return poisoned_benchmark(parts, n_classes=CLASSES, attack=attack or digits_attack(), seed=seed, device=device)
