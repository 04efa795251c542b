from dataclasses import replace

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
    """A hash of the arrays, their floats rounded to float32: the last bits of float64
    arithmetic differ between CPUs (vectorized reductions add in another order), so a hash of
    the float64 bytes pinned on one machine fails on another with the same code."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(arrays):
        v = np.ascontiguousarray(arrays[key])
        if v.dtype.kind == "f":
            v = v.astype(np.float32)
        h.update(key.encode() + str(v.dtype).encode() + str(v.shape).encode() + v.tobytes())
    return h.hexdigest()


def test_default_specs_build_the_same_sets_as_before_the_wider_generator():
    """The new spec fields default to the sets built before they existed (to float32
    precision: the hash is that of the generator as it was when these sets were pinned)."""
    import hashlib

    from auditor.suite import default_suite, quick_suite

    S = BenchmarkSpec
    specs = default_suite() + quick_suite() + [S(), S(kind="network", n=50, seed=3),
                                               S(kind="decoys", n=200, length=6, seed=7),
                                               S(n=80, poison_positions=(2, 3), seed=9)]
    h = hashlib.sha256()
    for spec in specs:
        h.update(_digest(make_benchmark(spec)).encode())
    assert h.hexdigest() == "1c1de42547ee86a325f786ea8edcdfcf2adfa2ab31a744cd51fe98153101905b"


def test_twin_replaces_the_poisons_by_ordinary_sequences_and_keeps_everything_else():
    spec = BenchmarkSpec(kind="decoys", n=120, poison_fraction=0.1, length=7, seed=11, camouflage=True)
    poisoned, twin = make_benchmark(spec), make_benchmark(replace(spec, twin=True))
    p = poisoned["is_poison"]
    assert p.sum() == 12 and not twin["is_poison"].any()
    np.testing.assert_array_equal(twin["x"][~p], poisoned["x"][~p])
    np.testing.assert_array_equal(twin["y"][~p], poisoned["y"][~p])
    np.testing.assert_array_equal(twin["x_val"], poisoned["x_val"])
    support = max(2, 7 // 2 - 1)
    assert not twin["x"][p][:, support:].any() and (np.abs(twin["x"][p][:, :support]) > 0).all()


@pytest.mark.parametrize("teacher", ["decaying", "modes", "mixed"])
def test_teachers_label_by_their_impulse_response(teacher):
    from auditor.benchmarks import make_teacher
    from auditor.ssm import impulse_response

    spec = BenchmarkSpec(n=60, length=6, seed=3, teacher=teacher)
    data = make_benchmark(spec)
    kappa = impulse_response(make_teacher(spec), 6)[0].numpy()              # kappa_1 acts on the last input
    np.testing.assert_allclose(data["y"], data["x"][:, ::-1] @ kappa, atol=1e-12)
    weights = make_teacher(spec)["c"][0].numpy()
    if teacher == "mixed":
        assert (weights > 0).any() and (weights < 0).any()
    else:
        assert (np.diff(kappa) < 0).all()                                  # positive modes decay
    assert not np.allclose(kappa, 1.0)


def test_label_scale_and_noise():
    base = make_benchmark(BenchmarkSpec(n=400, seed=2))
    scaled = make_benchmark(BenchmarkSpec(n=400, seed=2, label_scale=100.0))
    np.testing.assert_array_equal(scaled["x"], base["x"])
    np.testing.assert_allclose(scaled["y"], 100 * base["y"], rtol=1e-12)
    np.testing.assert_allclose(scaled["y_val"], 100 * base["y_val"], rtol=1e-12)
    noisy = make_benchmark(BenchmarkSpec(n=400, seed=2, label_noise=0.2))
    np.testing.assert_array_equal(noisy["x"], base["x"])
    np.testing.assert_array_equal(noisy["y_val"], base["y_val"])           # the trusted labels stay exact
    clean = ~base["is_poison"]
    ratio = (noisy["y"] - base["y"]).std() / base["y"][clean].std()
    assert 0.17 < ratio < 0.23


def test_heavy_tails_hard_negatives_and_spread_poisons():
    tails = make_benchmark(BenchmarkSpec(kind="clean", n=2000, seed=4, input_df=3.0))["x"][:, :2].ravel()
    normal = make_benchmark(BenchmarkSpec(kind="clean", n=2000, seed=4))["x"][:, :2].ravel()
    kurt = lambda v: ((v - v.mean()) ** 4).mean() / v.var() ** 2
    assert kurt(normal) < 3.5 < 6 < kurt(tails)
    late = make_benchmark(BenchmarkSpec(kind="clean", n=200, seed=4, clean_late=0.5))
    carries = (np.abs(late["x"][:, 2:]) > 0).any(axis=1)
    assert not late["is_poison"].any() and 0.35 < carries.mean() < 0.65
    spread = make_benchmark(BenchmarkSpec(n=200, seed=4, poison_positions=(1, 2, 3, 4)))
    poisons = spread["x"][spread["is_poison"]]
    assert (np.abs(poisons[:, 2:]) >= 0.5).all() and not poisons[:, :2].any()


def test_large_sets_are_fast():
    import time

    start = time.perf_counter()
    data = make_benchmark(BenchmarkSpec(n=5000, length=8, seed=1, teacher="mixed", label_noise=0.1, input_df=4.0,
                                        clean_late=0.2, camouflage=True))
    assert time.perf_counter() - start < 2.0
    assert data["x"].shape == (5000, 8) and data["is_poison"].sum() == 250


def test_bad_variations_are_refused():
    for bad in ({"teacher": "cubic"}, {"label_noise": -1.0}, {"clean_late": 2.0}, {"input_df": 0.0},
                {"label_scale": 0.0}, {"kind": "network", "teacher": "modes"}):
        with pytest.raises(ValueError):
            make_benchmark(BenchmarkSpec(**bad))
