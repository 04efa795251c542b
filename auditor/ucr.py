"""UCR/UEA time-series classification sets: aeon's bundled sets and users' ``.ts`` files.

Needs the optional extra ``auditor[data]`` (aeon), imported only when a set is read.

Bundled sets (:data:`DATASETS`; aeon ships their TRAIN and TEST files, which are joined
and re-split here):

==================  =====  ======  ========  =======
name                cases  length  channels  classes
==================  =====  ======  ========  =======
ItalyPowerDemand     1096      24         1        2
GunPoint              200     150         1        2
ArrowHead             211     251         1        3
OSULeaf               442     427         1        6
JapaneseVowels        640   7..29        12        9
BasicMotions           80     100         6        4
==================  =====  ======  ========  =======

Standardization: every series is z-normalized, each channel on its own (mean 0, standard
deviation 1 over its time steps; a constant channel is only centred), the UCR archive's
practice (its univariate files are z-normalized already, so this only fixes their
rounding). An attack budget ``eps`` is therefore in units of the series' own standard
deviation. Variable-length series (JapaneseVowels) are padded at the FRONT with zeros (the
normalized mean) to the longest series of the set, so that every series ends at the last
step, where the deep student reads its output.

Labels: the classes are numbered 0..C-1 in the order of their names (numerically when
every name is a number).

:func:`split_ucr` re-splits the joined set, class-stratified
(:func:`auditor.poisoning.stratified_split`): ``train`` gets ``n_train`` cases (default
40% of the set), and the rest is cut into three near-equal parts, ``trusted``,
``attacker`` and ``test``. :func:`make_ucr_benchmark` poisons ``train`` with one of
:data:`ATTACKS` (:func:`ucr_attack`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

EXTRA = "pip install 'auditor[data]'"
# name -> (aeon loader, channels)
DATASETS = {
    "ItalyPowerDemand": ("load_italy_power_demand", 1),
    "GunPoint": ("load_gunpoint", 1),
    "ArrowHead": ("load_arrow_head", 1),
    "OSULeaf": ("load_osuleaf", 1),
    "JapaneseVowels": ("load_japanese_vowels", 12),
    "BasicMotions": ("load_basic_motions", 6),
}
ATTACKS = ("none", "untargeted", "targeted", "collision")
TRAIN_SHARE = 0.4


class MissingExtra(ImportError):
    """aeon is not installed; the message says how to install it, in one line."""


def _aeon_datasets():
    try:
        import aeon.datasets
    except ImportError:
        raise MissingExtra(f"reading UCR/UEA data needs aeon: {EXTRA}") from None
    return aeon.datasets


def load_ucr(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled set, TRAIN and TEST joined, z-normalized per series and channel.

    Returns
    -------
    x : float64 (N, L) for one channel, (N, L, channels) otherwise
    y : int64 (N,), classes 0..C-1
    """
    if name not in DATASETS:
        raise ValueError(f"unknown UCR/UEA set {name!r}; bundled: {', '.join(DATASETS)}")
    datasets = _aeon_datasets()
    loader, _ = DATASETS[name]
    if not hasattr(datasets, loader):
        raise ValueError(f"the installed aeon does not bundle {name} (aeon.datasets.{loader} is gone)")
    series, labels = [], []
    for split in ("train", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)          # OSULeaf's loader is deprecated
            if name == "JapaneseVowels":                             # variable length: no return_type
                xs, ys = getattr(datasets, loader)(split=split)      # list of (channels, L_i)
            else:
                xs, ys = getattr(datasets, loader)(split=split, return_type="numpy3d")
        series += [np.asarray(s, np.float64) for s in xs]
        labels.append(np.asarray(ys))
    y, _ = encode_labels(np.concatenate(labels))
    return layout([z_normalize(s) for s in series]), y


def z_normalize(series: np.ndarray) -> np.ndarray:
    """One series (channels, L): each channel to mean 0 and standard deviation 1."""
    centred = series - series.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


def layout(series: list[np.ndarray]) -> np.ndarray:
    """Series (channels, L_i) as the dataset contract's x: (N, L) or (N, L, channels),
    shorter series padded with zeros at the front."""
    length = max(s.shape[1] for s in series)
    x = np.zeros((len(series), length, series[0].shape[0]))
    for i, s in enumerate(series):
        x[i, length - s.shape[1]:] = s.T
    return x[:, :, 0] if x.shape[2] == 1 else x


def encode_labels(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Class names -> int64 0..C-1 in the names' order (numeric if all are numbers)."""
    names = np.unique(np.asarray(labels).astype(str))
    try:
        names = sorted(names, key=float)
    except ValueError:
        names = sorted(names)
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[c] for c in np.asarray(labels).astype(str)], np.int64), list(names)


def split_sizes(total: int, *, n_train: int | None = None) -> dict[str, int]:
    """``train`` (default 40% of ``total``), then the rest in thirds: ``trusted``, ``attacker``
    (the first two get the remainder); ``test`` is what is left."""
    n_train = round(TRAIN_SHARE * total) if n_train is None else n_train
    rest = total - n_train
    return {"train": n_train, "trusted": rest // 3 + (rest % 3 > 0), "attacker": rest // 3 + (rest % 3 > 1)}


def split_ucr(name: str, *, seed: int = 0, n_train: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint class-stratified parts ``train``, ``trusted``, ``attacker``, ``test`` of a
    bundled set (sizes: :func:`split_sizes`); dict name -> (x, y), seeded."""
    from auditor.poisoning import stratified_split

    x, y = load_ucr(name)
    parts = stratified_split(y, split_sizes(len(y), n_train=n_train), seed=seed)
    return {part: (x[idx], y[idx]) for part, idx in parts.items()}


def ucr_attack(kind: str, *, length: int, **overrides):
    """The attack of ``auditor make-benchmark --kind ucr --attack KIND``
    (:class:`auditor.crafting.CraftConfig`); ``None`` for ``none``.

    eps is in units of the series' standard deviation (1 after z-normalization).

    ``untargeted``  gradient matching (the paper's attack, eq. (1) of
                    :mod:`auditor.crafting`) against the attacker's own data's loss: 10% of
                    the training set, eps 0.5, 2 surrogates, 200 signed-Adam steps.
    ``targeted``    gradient matching toward one target sequence of the attacker's split
                    (Witches' Brew), poisons from the adversarial class: 10%, eps 0.5,
                    2 surrogates, 200 steps.
    ``collision``   targeted late feature collision (eq. (3), no optimization): the
                    poisons' last 3/4 of the steps moved toward the target's by at most
                    eps = 1: 10%.
    """
    from auditor.crafting import CraftConfig

    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; known: {', '.join(ATTACKS)}")
    if kind == "none":
        return None
    base = {"fraction": 0.1, "eps": 0.5, "surrogates": 2, "steps": 200, "late": max(1, round(0.75 * length))}
    if kind == "untargeted":
        base |= {"mode": "untargeted"}
    elif kind == "targeted":
        base |= {"mode": "targeted", "targets": 1}
    else:
        base |= {"mode": "targeted", "targets": 1, "start": "collision", "steps": 0, "eps": 1.0}
    return CraftConfig(**{**base, **overrides})


def make_ucr_benchmark(name: str, *, attack: str = "none", seed: int = 0, n_train: int | None = None,
                       device: str = "cpu", **overrides) -> dict[str, np.ndarray]:
    """A (poisoned) benchmark from a bundled set, in the dataset contract.

    Parameters
    ----------
    name : a key of :data:`DATASETS`
    attack : one of :data:`ATTACKS` (``none``: the clean re-split, a clean twin)
    seed : int, the split and the attacker's randomness
    n_train : training cases (default 40% of the set)
    overrides : fields of the attack's CraftConfig (:func:`ucr_attack`), e.g. ``fraction``

    Returns
    -------
    dict with ``x``, ``y``, ``x_val``/``y_val`` (the trusted split), ``is_poison``,
    ``x_test``/``y_test`` and, for a targeted attack, ``x_target``/``y_target``
    (:func:`auditor.poisoning.poisoned_benchmark`). The poisons stay within the range of
    the values of the training and attacker splits.
    """
    from auditor.poisoning import poisoned_benchmark

    parts = split_ucr(name, seed=seed, n_train=n_train)
    x, y = parts["train"]
    config = ucr_attack(attack, length=x.shape[1], **overrides)
    seen = np.concatenate([x, parts["attacker"][0]])
    classes = int(max(int(part[1].max()) for part in parts.values() if len(part[1]))) + 1
    return poisoned_benchmark(parts, n_classes=classes, attack=config, seed=seed, device=device,
                              bounds=(float(seen.min()), float(seen.max())))


def load_ts_dataset(path: str | Path, *, max_bytes: int | None = None, max_array_bytes: int | None = None):
    """A ``.ts`` file as an audit :class:`auditor.data.Dataset`: its series give ``x`` (as
    stored, not normalized) and its labels ``y`` (classes numbered by :func:`encode_labels`,
    or regression targets). No reference set: a classification audit needs one; give it
    with ``auditor convert TRAIN.ts --reference REF.ts`` (:func:`ts_arrays`).

    Raises
    ------
    auditor.data.DatasetError
        In one line: aeon missing, unreadable file, no labels, unequal lengths, limits.
    """
    from auditor.data import sha256_bytes, validate_arrays

    arrays = ts_arrays(path, max_bytes=max_bytes, max_array_bytes=max_array_bytes)
    return validate_arrays(arrays, sha256=sha256_bytes(Path(path).read_bytes()))


def ts_arrays(path: str | Path, *, reference: str | Path | None = None, max_bytes: int | None = None,
              max_array_bytes: int | None = None) -> dict[str, np.ndarray]:
    """``x``, ``y`` from a ``.ts`` file and, from a second one, the reference ``x_val``,
    ``y_val``; the classes of both files numbered together (:func:`encode_labels`)."""
    from auditor.data import DatasetError

    x, labels, regression = read_ts(path, max_bytes=max_bytes, max_array_bytes=max_array_bytes)
    if reference is None:
        return {"x": x, "y": labels.astype(np.float64) if regression else encode_labels(labels)[0]}
    x_val, labels_val, regression_val = read_ts(reference, max_bytes=max_bytes, max_array_bytes=max_array_bytes)
    if regression != regression_val:
        raise DatasetError(f"{path} and {reference}: one has class labels, the other regression targets")
    if regression:
        return {"x": x, "y": labels.astype(np.float64), "x_val": x_val, "y_val": labels_val.astype(np.float64)}
    y = encode_labels(np.concatenate([labels.astype(str), labels_val.astype(str)]))[0]
    return {"x": x, "y": y[:len(x)], "x_val": x_val, "y_val": y[len(x):]}


def read_ts(path: str | Path, *, max_bytes: int | None = None,
            max_array_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """A ``.ts`` file's series x (n, L) or (n, L, channels), its labels as stored, and
    whether they are regression targets; refuses what :func:`load_ts_dataset` refuses."""
    from auditor.data import DatasetError, DatasetTooLarge

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DatasetTooLarge(f"file is {size} bytes, over the limit of {max_bytes}")
    try:
        datasets = _aeon_datasets()
    except MissingExtra as exc:
        raise DatasetError(str(exc)) from None
    try:
        xs, labels, meta = datasets.load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise DatasetError(f"unreadable .ts file {path}: {' '.join(str(exc).split())[:300]}") from None
    if len(xs) == 0:
        raise DatasetError(f"{path} holds no series")
    if not (meta["classlabel"] or meta["targetlabel"]) or len(labels) != len(xs):
        raise DatasetError(f"{path} has no labels (@classLabel or @targetLabel); the audit needs y")
    lengths = {np.shape(s)[-1] for s in xs}
    if len(lengths) > 1:
        raise DatasetError(f"{path} holds series of unequal lengths ({min(lengths)}..{max(lengths)}); "
                           "pad or cut them to one length first")
    series = [np.asarray(s, np.float64) for s in xs]
    if max_array_bytes is not None and len(series) * series[0].size * 8 > max_array_bytes:
        raise DatasetTooLarge(f"{path}: the series take more than {max_array_bytes} bytes")
    return layout(series), np.asarray(labels), bool(meta["targetlabel"])
