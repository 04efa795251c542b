import numpy as np
import pytest

from auditor.paper import get_setting, make_data, reproduce
from auditor.paper import test_set as network_test_set


def test_theory_l7_reproduces_the_published_gap():
    r = reproduce(setting="theory", length=7)
    assert r["clean_error"] <= 0.0017
    assert abs(r["poisoned_error"] - 0.0501) <= 0.3 * 0.0501
    assert len(r["clean_errors"]) == len(r["seeds"]) == 4


def test_theory_l9_gap_direction():
    r = reproduce(setting="theory", length=9)
    assert r["poisoned_error"] > 3 * r["clean_error"]


def test_standalone_l6_reproduces_the_published_gap():
    r = reproduce(setting="standalone", length=6)
    assert r["clean_error"] <= 0.3 and r["poisoned_error"] >= 3


@pytest.mark.slow
def test_standalone_l10_reproduces_the_published_gap():
    r = reproduce(setting="standalone", length=10)
    assert r["clean_error"] <= 0.25 and r["poisoned_error"] >= 0.6


def test_data_are_clean_labels_with_late_energy_poisons():
    s = get_setting("standalone", 6)
    x, y, is_poison = make_data(s, 200)
    assert x.shape == (18, 6) and is_poison.sum() == 10
    assert (y == x.sum(1)).all()                              # teacher labels: clean
    assert (x[is_poison][:, [0, 1, 2, 3, 5]] == 0).all()      # energy only at position k-1
    assert (x[~is_poison][:, 2:] == 0).all()


def test_unknown_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="known"):
        get_setting("standalone", 7)


@pytest.mark.slow
def test_network_l10_gap_direction_from_the_authors_starts():
    r = reproduce(setting="network", length=10)
    assert all(r["clean_converged"]) and all(r["poisoned_converged"])
    assert r["poisoned_error"] > r["clean_error"]


def test_network_test_set_is_drawn_per_seed_as_the_authors_do():
    s = get_setting("network", 6)
    x, y = network_test_set(s, 4540)
    assert x.shape == (2000, 40)
    assert np.array_equal(x, np.random.RandomState(4552).normal(0.0, 1.0, (2000, 40)))
    assert np.allclose(y, 7.5 * np.maximum(x.sum(1), 0))
