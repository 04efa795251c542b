"""Poisoned classification benchmarks from real sequences: the split and the attack.

What the digits (:mod:`auditor.digits`) and the UCR/UEA sets (:mod:`auditor.ucr`) share.
:func:`stratified_split` draws disjoint, class-stratified parts of a labelled set:

``train``     the training set that an attacker poisons and the audit examines
``trusted``   the defender's trusted reference split: clean, never an attack target
``attacker``  the attacker's own clean data (crafting may use it; the defender never does)
``test``      the rest, held out: harm is measured there, apart from the audit's data

:func:`poisoned_benchmark` crafts the poisons on ``train`` (:func:`auditor.crafting.craft`
against the audit's deep S4D student, :class:`auditor.deep.DeepSpec` with the set's classes
and :class:`auditor.deep.DeepTrainConfig` defaults) and returns the arrays of the dataset
contract (:mod:`auditor.data`).
"""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, sizes: dict[str, int], *, seed: int) -> dict[str, np.ndarray]:
    """Disjoint class-stratified index sets of the given sizes, and ``test``: the rest.

    Parameters
    ----------
    y : array (N,) int, the class of every example
    sizes : dict part name -> size, drawn in this order; each at least the number of classes
    seed : int, the draw

    Returns
    -------
    dict name -> indices into y; the rows of each sized part in a seeded random order,
    ``test`` sorted (may be empty). Every prefix of the drawing order holds the classes in
    shares proportional to their sizes, so each part does too (up to one example a class).
    """
    y = np.asarray(y)
    classes = len(np.unique(y))
    if min(sizes.values()) < classes or sum(sizes.values()) > len(y):
        raise ValueError(f"split sizes {sizes} need at least {classes} each and at most {len(y)} in all")
    rng = np.random.default_rng(seed)
    order = _stratified_order(y, rng)
    parts, start = {}, 0
    for name, size in sizes.items():
        idx = np.sort(order[start:start + size])
        parts[name] = idx[rng.permutation(size)]
        start += size
    parts["test"] = np.sort(order[start:])
    return parts


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, ordered so that every prefix holds the classes in nearly equal shares."""
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        keys[idx] = (np.arange(len(idx)) + rng.random()) / len(idx)      # position within the class
    return np.argsort(keys + 1e-9 * rng.random(len(y)), kind="stable")


def poisoned_benchmark(parts: dict[str, tuple[np.ndarray, np.ndarray]], *, n_classes: int, attack=None,
                       seed: int = 0, device: str = "cpu",
                       bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, np.ndarray]:
    """The arrays of a poisoned (or, with ``attack=None``, clean) benchmark.

    Parameters
    ----------
    parts : dict with ``train``, ``trusted``, ``attacker``, ``test``: (x (m, L), y (m,) int)
    n_classes : int, classes of the student the attacker assumes
    attack : CraftConfig or None (None: the clean training split, no poisons)
    seed : int, the attacker's randomness
    device : where the attacker's surrogates train
    bounds : (low, high), the box the poisoned sequences stay in

    Returns
    -------
    dict with ``x``, int ``y`` (the training split, poisons perturbed, labels unchanged),
    ``x_val``/``y_val`` (the trusted split: what a blind audit scores models on),
    ``is_poison``, ``x_test``/``y_test`` and, for a targeted attack, ``x_target``/``y_target``
    (the attacked sequences and their true labels: what a forensics audit scores models on).
    """
    (x, y), (x_tr, y_tr), (x_at, y_at), (x_te, y_te) = (parts[p] for p in ("train", "trusted", "attacker", "test"))
    arrays = {"x": np.asarray(x, np.float64), "y": y, "x_val": x_tr, "y_val": y_tr,
              "is_poison": np.zeros(len(x), bool)}
    if attack is not None:
        from auditor.crafting import craft
        from auditor.deep import DeepSpec, DeepTrainConfig

        channels = 1 if np.ndim(x) == 2 else int(np.shape(x)[2])
        crafted = craft(x=x, y=y, spec=DeepSpec(n_classes=n_classes, d_input=channels), train=DeepTrainConfig(),
                        config=attack, x_attack=x_at, y_attack=y_at, seed=seed, device=device, bounds=bounds)
        arrays["x"] = crafted.x
        arrays["is_poison"][crafted.poison] = True
        if crafted.targets is not None:
            arrays["x_target"], arrays["y_target"] = x_at[crafted.targets], y_at[crafted.targets]
    if len(x_te):
        arrays["x_test"], arrays["y_test"] = x_te, y_te
    return arrays
