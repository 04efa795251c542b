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


def _digest(arrays: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for key in sorted(arrays):
        v = np.ascontiguousarray(arrays[key])
        h.update(key.encode() + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
    return h.hexdigest()


def test_default_specs_build_the_same_sets_as_before_the_wider_generator():
    """The new spec fields default to the sets built before they existed, byte for byte."""
    import hashlib

    from auditor.suite import default_suite, quick_suite

    S = BenchmarkSpec
    specs = default_suite() + quick_suite() + [S(), S(kind="network", n=50, seed=3),
                                               S(kind="decoys", n=200, length=6, seed=7),
                                               S(n=80, poison_positions=(2, 3), seed=9)]
    h = hashlib.sha256()
    for spec in specs:
        h.update(_digest(make_benchmark(spec)).encode())
    assert h.hexdigest() == "1555f37148c10fe7246344d0850c4855b8895a3f2f33f35c4f9360e0f5742af5"
