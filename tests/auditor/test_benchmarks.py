import numpy as np
import pytest

from auditor.benchmarks import BenchmarkSpec, make_benchmark


@pytest.mark.parametrize("length", [5, 6, 8])
def test_decoys_are_clean_labelled_zero_sum_outliers(length):
    spec = BenchmarkSpec(kind="decoys", n=200, poison_fraction=0.05, length=length, seed=4)
    data = make_benchmark(spec)
    x, y, poison = data["x"], data["y"], data["is_poison"]
    support = max(2, length // 2 - 1)
    decoy = (np.abs(x.sum(axis=1)) < 1e-9) & ~poison
    assert decoy.sum() == round(spec.decoy_fraction * spec.n)
    assert not x[decoy][:, support:].any()                                  # on the clean support only
    rms = np.sqrt((x[decoy][:, :support] ** 2).mean(axis=1))
    assert ((rms >= 2.0 - 1e-9) & (rms <= 3.0 + 1e-9)).all()
    clean_rms = np.sqrt((x[~decoy & ~poison][:, :support] ** 2).mean())
    assert rms.min() > 1.5 * clean_rms                                     # outliers by magnitude
    np.testing.assert_allclose(y[decoy], 0.0, atol=1e-9)                    # the teacher's label: sum_t x_t


def test_kinds_hold_their_poisons_and_nothing_else():
    for kind, poisons in (("standalone", 10), ("decoys", 10), ("clean", 0)):
        data = make_benchmark(BenchmarkSpec(kind=kind, n=100, poison_fraction=0.1, length=6, seed=5))
        assert data["is_poison"].sum() == poisons
        late = np.abs(data["x"][:, 4]) > 0                                  # position k-1 carries the poisons' energy
        assert (late == data["is_poison"]).all()
