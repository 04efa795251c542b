import itertools

import numpy as np
import pytest

from auditor.data import validate_arrays, with_reference
from auditor.digits import (
    CLASSES,
    LENGTH,
    digits_attack,
    load_digits_sequences,
    make_digits_benchmark,
    split_digits,
)


def test_digits_are_pixel_sequences():
    x, y = load_digits_sequences()
    assert x.shape == (1797, LENGTH) and y.shape == (1797,)
    assert x.min() == 0.0 and x.max() == 1.0 and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(CLASSES))


def test_split_is_disjoint_stratified_and_seeded():
    parts = split_digits(seed=3, n_train=500, n_trusted=200, n_attacker=200)
    assert [len(parts[p][0]) for p in ("train", "trusted", "attacker", "test")] == [500, 200, 200, 897]
    x, _ = load_digits_sequences()
    rows = {name: {r.tobytes() for r in parts[name][0]} for name in parts}
    duplicates = len(x) - len({r.tobytes() for r in x})          # identical images may recur in the data
    for (a, ra), (b, rb) in itertools.combinations(rows.items(), 2):
        assert len(ra & rb) <= duplicates, (a, b)
    for name in ("train", "trusted", "attacker"):
        counts = np.bincount(parts[name][1], minlength=CLASSES)
        assert counts.max() - counts.min() <= 4, name
    again = split_digits(seed=3, n_train=500, n_trusted=200, n_attacker=200)
    assert np.array_equal(again["train"][0], parts["train"][0])
    assert not np.array_equal(split_digits(seed=4, n_train=500)["train"][0], parts["train"][0][:500])
    with pytest.raises(ValueError):
        split_digits(n_train=1500, n_trusted=300)


def test_benchmark_keeps_labels_and_poisons_only_late_elements():
    attack = digits_attack(fraction=0.05, surrogates=1)
    arrays = make_digits_benchmark(seed=1, n_train=100, n_trusted=50, n_attacker=60, attack=attack)
    dataset = validate_arrays(arrays)
    assert dataset.task == "classification" and dataset.n == 100
    clean_x, clean_y = split_digits(seed=1, n_train=100, n_trusted=50, n_attacker=60)["train"]
    assert np.array_equal(dataset.y, clean_y)                       # clean labels
    changed = np.flatnonzero(np.abs(dataset.x - clean_x).max(1) > 0)
    assert set(changed) <= set(np.flatnonzero(dataset.is_poison)) and dataset.is_poison.sum() == 5
    delta = dataset.x - clean_x
    assert np.abs(delta[:, :LENGTH - attack.late]).max() == 0.0
    assert np.abs(delta).max() <= attack.eps + 1e-12 and dataset.x.min() >= 0 and dataset.x.max() <= 1
    assert dataset.x_target.shape == (1, LENGTH)                      # the attacked sequence
    assert dataset.x_val.shape == (50, LENGTH)                        # the trusted split: blind audits
    assert len(set(dataset.y[dataset.is_poison])) == 1                # drawn from the adversarial class
    assert dataset.y[dataset.is_poison][0] != dataset.y_target[0]
    forensics = with_reference(dataset, mode="forensics")
    assert np.array_equal(forensics.x_val, dataset.x_target) and with_reference(dataset, mode="blind") is dataset
