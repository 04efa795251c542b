import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.screens import (
    SCREENS,
    gamma0_scores,
    gradient_similarity_scores,
    isolation_forest_scores,
    output_residual,
    per_example_grads,
    rank_average,
    run_screens,
    spectral_signature_scores,
    trace_push_scores,
)
from auditor.ssm import SSMSpec, forward, init_params, reverse_time, teacher_params
from auditor.train import TrainConfig, autograd_loss_and_grad, ssm_loss_and_grad, train_many

SPEC = SSMSpec(state_dim=10, sigma_a=1e-3)
CONFIG = TrainConfig(optimizer="gd", lr=0.01, eps=0.01, extra_steps=500, max_steps=20000)
NET = SSMSpec(state_dim=4, sigma_a=0.3, sigma_b=0.3, sigma_c=0.3, offset=0.0, width=5, sigma_mlp=0.5)


def _bench(kind, seed=0):
    return make_benchmark(BenchmarkSpec(kind=kind, n=80, poison_fraction=0.1, length=6, seed=seed))


def _screens(data, seed=0):
    return run_screens(spec=SPEC, x=data["x"], y=data["y"], x_val=data["x_val"], y_val=data["y_val"],
                       config=CONFIG, seed=seed)


@pytest.fixture(scope="module")
def standalone():
    data = _bench("standalone")
    return data, _screens(data)


@pytest.fixture(scope="module")
def decoys():
    data = _bench("decoys", seed=1)
    return data, _screens(data)


def _flat(grads, names):
    return torch.cat([grads[k].flatten(1) for k in names], dim=1)                  # (M, P)


def _stacked(params, n):
    return {k: v.expand(n, *v.shape[1:]).clone() for k, v in params.items()}


# --------------------------------------------------------------------------- contract


def test_run_screens_contract_and_determinism(standalone):
    data, scores = standalone
    assert tuple(scores) == SCREENS
    for name, s in scores.items():
        assert s.shape == (len(data["y"]),) and s.dtype == np.float64, name
        assert np.isfinite(s).all(), name
        assert s.std() > 0, f"{name} is constant"
    again = _screens(data)
    for name in SCREENS:
        np.testing.assert_array_equal(again[name], scores[name], err_msg=name)


def test_run_screens_without_a_reference_set_leaves_out_gradient_similarity():
    data = make_benchmark(BenchmarkSpec(kind="standalone", n=20, poison_fraction=0.1, length=6, seed=3))
    config = TrainConfig(optimizer="gd", lr=0.01, eps=0.01, extra_steps=100, max_steps=2000)
    scores = run_screens(spec=SPEC, x=data["x"], y=data["y"], x_val=None, y_val=None, config=config)
    assert tuple(scores) == tuple(name for name in SCREENS if name != "gradient_similarity")
    assert all(s.shape == (20,) and np.isfinite(s).all() for s in scores.values())


def test_rank_average_normalized_ranks():
    scores = {"u": np.array([0.0, 1.0, 2.0, 3.0]), "v": np.array([3.0, 2.0, 1.0, 0.0]),
              "w": np.array([5.0, 5.0, 9.0, np.nan])}
    np.testing.assert_allclose(rank_average(scores, ["u"]), [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(rank_average(scores, ["u", "v"]), [0.5] * 4)
    np.testing.assert_allclose(rank_average(scores, ["w"]), [0.5, 0.5, 1.0, 0.0])   # ties share, NaN lowest
    assert rank_average(scores).shape == (4,)
    with pytest.raises(ValueError):
        rank_average(scores, [])


# --------------------------------------------------------------------------- building blocks


def test_per_example_grads_match_one_model_per_example():
    """A model whose mask is e_n has loss l_n: stacked copies give each example's gradient."""
    gen = torch.Generator().manual_seed(0)
    x_rev = reverse_time(torch.randn(7, 5, generator=gen, dtype=torch.float64))
    y = torch.randn(7, generator=gen, dtype=torch.float64)
    eye = torch.eye(7, dtype=torch.float64)
    for spec, reference in ((SSMSpec(state_dim=3, sigma_a=0.3, sigma_b=0.3, sigma_c=0.3), ssm_loss_and_grad),
                            (NET, autograd_loss_and_grad)):
        params = init_params(spec, [3])
        _, ref = reference(_stacked(params, 7), x_rev, y, eye)
        torch.testing.assert_close(per_example_grads(params, x_rev, y), _flat(ref, spec.param_names),
                                   rtol=1e-10, atol=1e-14)


def test_output_residual_is_the_ssm_output_gradient():
    gen = torch.Generator().manual_seed(1)
    x_rev = reverse_time(torch.randn(6, 5, generator=gen, dtype=torch.float64))
    y = torch.randn(6, generator=gen, dtype=torch.float64)
    ssm = init_params(SSMSpec(state_dim=3), [0])
    torch.testing.assert_close(output_residual(ssm, x_rev, y), forward(ssm, x_rev) - y)
    net = init_params(NET, [0])
    # a model whose c is scaled by (1 + h) has SSM output (1 + h) s: finite difference in h
    h = 1e-6
    up, down = dict(net, c=net["c"] * (1 + h)), dict(net, c=net["c"] * (1 - h))
    s = forward({k: net[k] for k in ("a", "b", "c")}, x_rev)
    fd = (((forward(up, x_rev) - y) ** 2 - (forward(down, x_rev) - y) ** 2) / (4 * h * s))      # dl/ds / 2
    torch.testing.assert_close(output_residual(net, x_rev, y), fd, rtol=1e-5, atol=1e-9)


def test_gradient_similarity_is_the_tracin_sum():
    data = _bench("standalone")
    traj = train_many(SPEC, data["x"], data["y"], np.ones((1, 80)), [0], TrainConfig.fixed(40),
                      record_every=20).trajectory
    assert len(traj) == 2
    x_rev, y = reverse_time(torch.as_tensor(data["x"])), torch.as_tensor(data["y"])
    xv, yv = reverse_time(torch.as_tensor(data["x_val"])), torch.as_tensor(data["y_val"])
    expected = 0
    for p in traj:
        _, gv = ssm_loss_and_grad(p, xv, yv, torch.ones(1, len(yv), dtype=torch.float64))
        _, gn = ssm_loss_and_grad(_stacked(p, 80), x_rev, y, torch.eye(80, dtype=torch.float64))
        expected = expected - (_flat(gn, SPEC.param_names) @ _flat(gv, SPEC.param_names)[0]).numpy()
    got = gradient_similarity_scores(trajectory=traj, x=data["x"], y=data["y"],
                                     x_val=data["x_val"], y_val=data["y_val"])
    np.testing.assert_allclose(got, expected, rtol=1e-9)


# --------------------------------------------------------------------------- detection


def test_gamma0_detects_poisons_and_ignores_decoys(standalone, decoys):
    for data, scores in (standalone, decoys):
        assert roc_auc_score(data["is_poison"], scores["gamma0"]) >= 0.95           # measured 1.0
    data, scores = decoys
    large = _large_clean(data)
    assert large.sum() >= 2
    assert roc_auc_score(large, scores["gamma0"]) <= 0.6                              # measured 0.45


def test_gamma0_signed_and_magnitude_agree_on_standalone(standalone):
    data, _ = standalone
    traj = train_many(SPEC, data["x"], data["y"], np.ones((1, 80)), [0], CONFIG, record_every=100).trajectory
    for signed in (True, False):
        s = gamma0_scores(trajectory=traj, x=data["x"], y=data["y"], signed=signed)
        assert roc_auc_score(data["is_poison"], s) >= 0.95, signed


def _large_clean(data):
    """The decoys: non-poisons whose values sum to zero (a clean sequence's do with chance 0)."""
    return (np.abs(data["x"].sum(axis=1)) < 1e-9) & ~data["is_poison"]


def test_outlier_screens_are_fooled_by_decoys(decoys):
    """Isolation forest and loss trajectories rank harmless large outliers on top."""
    data, scores = decoys
    large = _large_clean(data)
    for name in ("isolation_forest", "loss_trajectory"):
        assert roc_auc_score(large, scores[name]) >= 0.9, name                        # measured 0.94-0.98
    top = np.argsort(-scores["isolation_forest"])[:large.sum()]
    assert large[top].mean() >= 0.5


def _wrong_labels(kind, seed=2):
    """A clean set with 8 of 80 labels corrupted, a trusted set of the same distribution,
    and the trajectory of a run long enough to fit (the SSM's plateau lasts ~3000 steps)."""
    data = make_benchmark(BenchmarkSpec(kind="clean", n=80, seed=seed))
    rng = np.random.default_rng(seed)
    bad = np.zeros(80, bool)
    bad[rng.choice(80, 8, replace=False)] = True
    x_val = np.zeros((100, 6))
    x_val[:, :2] = rng.standard_normal((100, 2))
    y_val = forward(teacher_params(), reverse_time(torch.as_tensor(x_val)))[0].numpy()
    y = np.where(bad, -data["y"], data["y"]) if kind == "flip" else np.where(bad, data["y"] + 3, data["y"])
    traj = train_many(SPEC, data["x"], y, np.ones((1, 80)), [0], TrainConfig.fixed(4000),
                      record_every=200).trajectory
    return data["x"], y, x_val, y_val, bad, traj


def test_tracin_flags_flipped_labels_against_an_in_distribution_trusted_set():
    """Where harm IS first-order (wrong labels), the TracIn screen finds it."""
    x, y, x_val, y_val, bad, traj = _wrong_labels("flip")
    s = gradient_similarity_scores(trajectory=traj, x=x, y=y, x_val=x_val, y_val=y_val)
    assert roc_auc_score(bad, s) >= 0.9                                               # measured 1.0


def test_spectral_signature_flags_a_coherent_label_shift():
    x, y, _, _, bad, traj = _wrong_labels("offset")
    s = spectral_signature_scores(params=traj[-1], x=x, y=y)
    assert roc_auc_score(bad, s) >= 0.85                                              # measured 0.98


def test_tracin_sees_clean_label_poisons_as_helpful_at_init(standalone):
    """The documented failure: the trusted loss also wants A to grow, so poisons look good."""
    data, _ = standalone
    s = gradient_similarity_scores(trajectory=[init_params(SPEC, [0])], x=data["x"], y=data["y"],
                                   x_val=data["x_val"], y_val=data["y_val"])
    assert roc_auc_score(data["is_poison"], s) <= 0.1                                 # measured 0.0


def test_isolation_forest_is_seeded():
    x = np.random.default_rng(0).standard_normal((50, 6))
    np.testing.assert_array_equal(isolation_forest_scores(x=x, seed=3, n_estimators=50), isolation_forest_scores(x=x, seed=3, n_estimators=50))
    assert not np.array_equal(isolation_forest_scores(x=x, seed=3, n_estimators=50), isolation_forest_scores(x=x, seed=4, n_estimators=50))


def test_trace_push_is_each_examples_share_of_the_uniform_a_gradient():
    data = _bench("standalone")
    traj = train_many(SPEC, data["x"], data["y"], np.ones((1, 80)), [0], TrainConfig.fixed(40),
                      record_every=20).trajectory
    x_rev, y = reverse_time(torch.as_tensor(data["x"])), torch.as_tensor(data["y"])
    expected = 0
    for p in traj:
        _, gn = ssm_loss_and_grad(_stacked(p, 80), x_rev, y, torch.eye(80, dtype=torch.float64))
        push = gn["a"].sum(1).abs().numpy()                                   # |sum_i dl_n/da_i|
        expected = expected + push / push.sum()
    np.testing.assert_allclose(trace_push_scores(trajectory=traj, x=data["x"], y=data["y"]), expected, rtol=1e-9)


def test_trace_push_sees_poisons_that_gamma0_cannot():
    """Poisons with their energy at position k-2: gamma0 (position k-1 only) scores all
    zero, trace_push ranks them high."""
    data = make_benchmark(BenchmarkSpec(kind="standalone", n=80, poison_fraction=0.1, length=6,
                                        poison_positions=(3,), seed=4))
    scores = _screens(data)
    assert roc_auc_score(data["is_poison"], scores["gamma0"]) == 0.5
    assert roc_auc_score(data["is_poison"], scores["trace_push"]) >= 0.8                   # measured 0.98
