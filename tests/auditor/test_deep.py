import numpy as np
import pytest
import torch

from auditor.engine import build_problem, run_audit
from auditor.config import AuditConfig
from auditor.data import DatasetError, validate_arrays
from auditor.deep import (
    INITS,
    DeepSpec,
    DeepTrainConfig,
    batch_indices,
    evaluate,
    init_params,
    initial_a,
    logits,
    ssm_kernel,
    toeplitz,
    train_many,
    train_one,
)
from auditor.deep_problem import SCREENS, DeepAuditProblem, tracin_scores
from auditor.trials import Trial

SPEC = DeepSpec(n_classes=3, d_model=4, d_state=6, n_layers=2)
TRAIN = DeepTrainConfig(epochs=3, batch_size=8, lr=0.02, ssm_lr=0.01, weight_decay=0.01)


def _data(n=40, length=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, length)), rng.integers(0, 3, n)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _channels_data(n=36, length=10, channels=3, seed=0):
    """Three classes told apart by which channel carries a late pulse: x (n, L, c)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, length, channels)) * 0.2
    x[np.arange(n), length - 2, y % channels] += 1.0
    return x, y


# Logits of init_params(SPEC, [11]) on _data-like inputs, and one short float64 training run,
# computed with the single-channel model before it read channels: x (n, L) must keep them.
PINNED_LOGITS = [[-0.250546019117885, -0.7069450453872914, -0.10563418476645758],
                 [0.36533691571574867, -0.5773545924752532, -0.5102760917180794],
                 [0.3738930718353316, -0.5649598001665299, -0.511192017601153],
                 [-1.2300922591873755, 0.39172965891339595, 0.841285984131772],
                 [-0.14307654312296636, -0.7553726802134874, -0.17857570650304522]]
PINNED_LOSS = 0.9105125129479603


def test_single_channel_outputs_are_pinned():
    rng = np.random.default_rng(0)
    x = rng.random((5, 7))
    z = logits(init_params(SPEC, [11]), torch.as_tensor(x))[0]                      # (n, C)
    np.testing.assert_allclose(z.numpy(), PINNED_LOGITS, rtol=1e-12, atol=1e-14)
    result = train_many(SPEC, x, rng.integers(0, 3, 5), np.ones((1, 5)), [11],
                        DeepTrainConfig(epochs=2, batch_size=3), dtype=torch.float64)
    assert result.loss.item() == pytest.approx(PINNED_LOSS, rel=1e-10)
    z3 = logits(init_params(SPEC, [11]), torch.as_tensor(x[..., None]))[0]          # (n, L, 1): the same model
    assert torch.equal(z3, z)


def test_kernel_matches_complex_arithmetic():
    params = init_params(SPEC, [1, 2])
    k = ssm_kernel(params, 1, 20)                                                       # (M, H, L)
    dt = torch.exp(params["1.log_dt"])[..., None]
    a = -torch.exp(params["1.log_a_re"]) + 1j * params["1.a_im"]
    c = torch.view_as_complex(params["1.c"].contiguous())
    ref = 2 * torch.einsum("mhk,mhkl->mhl", c * (torch.exp(dt * a) - 1) / a,
                           torch.exp((dt * a)[..., None] * torch.arange(20))).real
    assert _rel(k, ref) < 1e-12


def test_convolution_equals_the_zoh_recurrence():
    """y_t = sum_s K[t-s] u_s equals 2 Re(C h_t), h_t = exp(dt A) h_{t-1} + (exp(dt A) - 1)/A u_t."""
    params = init_params(SPEC, [3])
    L = 15
    u = torch.randn(4, L, dtype=torch.float64, generator=torch.Generator().manual_seed(0))   # (H, L)
    y = (toeplitz(ssm_kernel(params, 0, L))[0] @ u.unsqueeze(-1)).squeeze(-1)                # (H, L)
    dt = torch.exp(params["0.log_dt"][0])[:, None]
    a = -torch.exp(params["0.log_a_re"][0]) + 1j * params["0.a_im"][0]
    c = torch.view_as_complex(params["0.c"][0].contiguous())
    h = torch.zeros_like(c)
    ref = []
    for t in range(L):
        h = torch.exp(dt * a) * h + (torch.exp(dt * a) - 1) / a * u[:, t:t + 1]
        ref.append(2 * (c * h).sum(-1).real)
    assert _rel(y, torch.stack(ref, 1)) < 1e-12


def test_train_many_equals_train_one_float64():
    x, y = _data()
    rng = np.random.default_rng(1)
    masks = (rng.random((3, len(x))) < 0.7).astype(float)
    masks[2] = 0
    masks[2, :3] = 1                                          # most batches of this model are empty
    seeds = [5, 6, 7]
    many = train_many(SPEC, x, y, masks, seeds, TRAIN, dtype=torch.float64, chunk=2)
    for m, seed in enumerate(seeds):
        one = train_one(SPEC, x, y, masks[m], seed, TRAIN)
        for k in one.params:
            assert _rel(many.params[k][m], one.params[k][0]) <= 1e-9, k
        assert abs(many.loss[m].item() - one.loss.item()) <= 1e-9 * one.loss.item()


def test_chunking_and_masked_examples_do_not_change_a_model():
    x, y = _data()
    masks = np.ones((4, len(x)))
    masks[1, 5] = masks[3, 5] = 0
    seeds = [1, 1, 2, 2]
    whole = train_many(SPEC, x, y, masks, seeds, TRAIN, dtype=torch.float64)
    chunked = train_many(SPEC, x, y, masks, seeds, TRAIN, dtype=torch.float64, chunk=3)
    for k in whole.params:
        assert _rel(chunked.params[k], whole.params[k]) < 1e-12
    x2 = x.copy()
    x2[5] = 0.5                                               # changes only the example models 1, 3 drop
    other = train_many(SPEC, x2, y, masks, seeds, TRAIN, dtype=torch.float64)
    for k in whole.params:
        assert _rel(other.params[k][[1, 3]], whole.params[k][[1, 3]]) < 1e-12
        assert _rel(other.params[k][[0, 2]], whole.params[k][[0, 2]]) > 1e-9


def test_batch_stream_is_shuffled_epochs():
    idx = batch_indices(n=10, seed=3, steps=5, batch_size=4)
    assert idx.shape == (5, 4)
    assert sorted(idx.reshape(-1)[:10]) == list(range(10))
    assert np.array_equal(idx, batch_indices(n=10, seed=3, steps=5, batch_size=4))


def test_train_many_validates_inputs():
    x, y = _data(n=10)
    with pytest.raises(ValueError, match="masks"):
        train_many(SPEC, x, y, np.ones((2, 9)), [0, 1], TRAIN)
    with pytest.raises(ValueError, match="seeds"):
        train_many(SPEC, x, y, np.ones((2, 10)), [0], TRAIN)
    with pytest.raises(ValueError, match="at least one"):
        train_many(SPEC, x, y, np.zeros((1, 10)), [0], TRAIN)


def test_learns_a_separable_task():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = rng.random((90, 10)) * 0.2
    x[np.arange(90), 3 * y] += 1.0                            # the class is where the pulse is
    result = train_many(DeepSpec(n_classes=3, d_model=8), x, y, np.ones((2, 90)), [0, 1],
                        DeepTrainConfig(epochs=20, batch_size=15))
    assert (evaluate(result.params, x, y)["accuracy"] > 0.9).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, y = _data()
    masks = np.ones((3, len(x)))
    masks[1, :5] = 0
    cpu = train_many(SPEC, x, y, masks, [0, 1, 2], TRAIN, dtype=torch.float64)
    gpu = train_many(SPEC, x, y, masks, [0, 1, 2], TRAIN, dtype=torch.float64, device="cuda")
    for k in cpu.params:
        assert _rel(gpu.params[k], cpu.params[k]) < 1e-8, k
    z_cpu = logits({k: v.float() for k, v in cpu.params.items()}, torch.as_tensor(x, dtype=torch.float32))
    z_gpu = logits({k: v.float().cuda() for k, v in gpu.params.items()},
                   torch.as_tensor(x, dtype=torch.float32, device="cuda")).cpu()
    assert (z_cpu.argmax(-1) == z_gpu.argmax(-1)).float().mean() > 0.95


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_with_channels_and_screens():
    x, y = _channels_data(n=24)
    spec = DeepSpec(n_classes=3, d_model=4, d_state=6, n_layers=2, d_input=3, init="s4d-legs")
    masks = np.ones((2, 24))
    masks[1, :4] = 0
    cpu = train_many(spec, x, y, masks, [0, 1], TRAIN, dtype=torch.float64)
    gpu = train_many(spec, x, y, masks, [0, 1], TRAIN, dtype=torch.float64, device="cuda")
    assert gpu.meta["device"] == "cuda"
    for k in cpu.params:
        assert _rel(gpu.params[k], cpu.params[k]) < 1e-8, k
    ev = evaluate(gpu.params, x, y, device="cuda", dtype=torch.float64)
    assert torch.allclose(ev["losses"], evaluate(cpu.params, x, y, dtype=torch.float64)["losses"], rtol=1e-6)
    problem = _problem_channels()
    on_cpu = problem.screens(seed=0)
    on_gpu = problem.on_device("cuda").screens(seed=0)
    for name in ("gradient_similarity", "loss_trajectory"):
        assert np.corrcoef(on_cpu[name], on_gpu[name])[0, 1] > 0.99, name


# --------------------------------------------------------------------------- channels


def test_channels_train_as_the_reference_and_mix_in_the_encoder():
    x, y = _channels_data(n=20)
    spec = DeepSpec(n_classes=3, d_model=4, d_state=6, n_layers=2, d_input=3)
    masks = np.ones((2, 20))
    masks[1, :6] = 0
    many = train_many(spec, x, y, masks, [3, 4], TRAIN, dtype=torch.float64)
    assert many.params["enc_w"].shape == (2, 4, 3)
    one = train_one(spec, x, y, masks[1], 4, TRAIN)
    for k in one.params:
        assert _rel(many.params[k][1], one.params[k][0]) <= 1e-9, k
    ev = evaluate(many.params, x, y)
    assert ev["losses"].shape == (2, 20) and ev["accuracy"].shape == (2,)
    params = init_params(spec, [5])
    swapped = dict(params, enc_w=params["enc_w"][..., [2, 0, 1]])
    xt = torch.as_tensor(x)
    assert _rel(logits(swapped, xt[..., [2, 0, 1]]), logits(params, xt)) < 1e-12     # W_enc x is a matrix product
    assert _rel(logits(swapped, xt), logits(params, xt)) > 1e-3
    with pytest.raises(ValueError, match="channels"):
        logits(params, xt[..., :2])


def _problem_channels(n=30, length=8):
    x, y = _channels_data(n=n, length=length)
    xv, yv = _channels_data(n=12, length=length, seed=1)
    return DeepAuditProblem(x=x, y=y, x_val=xv, y_val=yv,
                            spec=DeepSpec(n_classes=3, d_model=4, d_state=4, d_input=3),
                            train=DeepTrainConfig(epochs=2, batch_size=10), chunk=2)


def test_problem_screens_and_trials_read_channels():
    problem = _problem_channels()
    outcomes = problem.run([Trial(np.ones(30, bool), 0), Trial.keep_all_but(30, [1, 2], 1)])
    assert all(np.isfinite(o.error) and o.error > 0 for o in outcomes)
    scores = problem.screens(seed=0)
    assert set(scores) == set(SCREENS)
    for name, s in scores.items():
        assert s.shape == (30,) and np.isfinite(s).all(), name
    assert np.ptp(scores["gradient_similarity"]) > 0
    assert len(problem.kernels([1, 2], seed=0)["with_all"]) == 8


def test_multichannel_classification_set_audits_end_to_end():
    from auditor import audit
    from auditor.data import check_auditable

    x, y = _channels_data(n=24, length=6)
    xv, yv = _channels_data(n=8, length=6, seed=1)
    check_auditable(validate_arrays({"x": x, "y": y, "x_val": xv, "y_val": yv}))
    with pytest.raises(DatasetError, match="needs a trusted reference set"):          # regression: the widened SSM
        check_auditable(validate_arrays({"x": x, "y": y.astype(float)}))
    result = audit(x, y, x_val=xv, y_val=yv, model="s4d", confirm_seeds=6, deep_init="s4d-inv")
    assert result.config.deep_init == "s4d-inv"
    assert len(result.report["scores"]) == 24
    assert result.report["generalization"]["metric"] == "trusted-set cross-entropy"


# --------------------------------------------------------------------------- initializations


def _legs_normal_part(N):
    """HiPPO-LegS as S4 defines it, A = -T M T^-1 with P P^T added back: (N, N)."""
    q = np.arange(N, dtype=np.float64)
    r = 2 * q + 1
    row, col = np.meshgrid(q, q, indexing="ij")
    A = -(np.where(row >= col, np.sqrt(np.outer(r, r)), 0.0) - np.diag(q))              # HiPPO-LegS
    P = np.sqrt(q + 0.5)
    return A + np.outer(P, P), np.sqrt(r)


def test_inits_give_the_stated_eigenvalues():
    N = 8
    a_re, a_im, b = initial_a("s4d-lin", N)
    assert a_re.tolist() == [-0.5] * 4 and np.allclose(a_im, np.pi * np.arange(4)) and (b == [1, 0]).all()
    _, a_im, _ = initial_a("s4d-inv", N)
    assert np.allclose(a_im, N / np.pi * (N / (2 * np.arange(4) + 1) - 1))
    a_re, a_im, b = initial_a("s4d-legs", N)
    A, B = _legs_normal_part(N)
    w, v = np.linalg.eig(A)                                                            # (N,), (N, N)
    up = np.argsort(w.imag)[N // 2:]
    assert np.allclose(a_re, w.real[up]) and np.allclose(a_im, w.imag[up]) and (a_im > 0).all()
    assert np.allclose(b[:, 0], np.abs(v[:, up].conj().T @ B)) and (b[:, 1] == 0).all()
    params = init_params(DeepSpec(d_model=2, d_state=N, init="s4d-legs"), [0])
    assert torch.allclose(-torch.exp(params["0.log_a_re"][0, 1]), torch.as_tensor(a_re))
    assert torch.equal(params["1.a_im"][0, 0], torch.as_tensor(a_im))
    with pytest.raises(ValueError, match="init"):
        DeepSpec(init="lin")


@pytest.mark.parametrize("init", INITS)
def test_every_init_lowers_the_training_loss(init):
    x, y = _channels_data(n=45)
    spec = DeepSpec(n_classes=3, d_model=8, d_input=3, init=init)
    start = evaluate(init_params(spec, [0, 1]), x, y)["loss"]
    result = train_many(spec, x, y, np.ones((2, 45)), [0, 1], DeepTrainConfig(epochs=10, batch_size=15))
    assert (evaluate(result.params, x, y)["loss"] < 0.5 * start).all()


# --------------------------------------------------------------------------- the audit problem


def _problem(n=30, length=8):
    x, y = _data(n=n, length=length)
    xv, yv = _data(n=12, length=length, seed=1)
    return DeepAuditProblem(x=x, y=y, x_val=xv, y_val=yv, spec=DeepSpec(n_classes=3, d_model=4, d_state=4),
                            train=DeepTrainConfig(epochs=2, batch_size=10), chunk=2)


def test_problem_runs_trials_in_order_and_deterministically():
    problem = _problem()
    trials = [Trial(np.ones(30, bool), 0), Trial.keep_all_but(30, [1, 2], 1), Trial(np.ones(30, bool), 2)]
    first = problem.run(trials)
    again = problem.run(trials[::-1])[::-1]
    assert [o.key for o in first] == [t.key for t in trials]
    assert [o.error for o in first] == pytest.approx([o.error for o in again], rel=1e-5)
    assert all(np.isfinite(o.error) and o.error > 0 and o.steps == 6 for o in first)
    assert problem.run([]) == []


def test_problem_screens_and_kernels():
    problem = _problem()
    scores = problem.screens(seed=0)
    assert set(scores) == set(SCREENS)
    for name, s in scores.items():
        assert s.shape == (30,) and np.isfinite(s).all(), name
    curves = problem.kernels([1, 2], seed=0)
    assert set(curves) == {"with_all", "without_flagged"} and len(curves["with_all"]) == 8


def test_tracin_equals_explicit_gradient_products():
    problem = _problem()
    params = {k: v.double() for k, v in problem.fit(np.ones((1, 30)), [0]).params.items()}
    x, y = torch.as_tensor(problem.x), torch.as_tensor(problem.y)
    xv, yv = torch.as_tensor(problem.x_val), torch.as_tensor(problem.y_val)
    scores = tracin_scores([params], x, y, xv, yv)
    from auditor.deep import per_example_loss

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}

    def flat(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))])

    g_val = flat(per_example_loss(leaves, xv, yv).mean())
    ref = [-(flat(per_example_loss(leaves, x[i:i + 1], y[i:i + 1]).sum()) @ g_val).item() for i in range(5)]
    assert scores[:5] == pytest.approx(ref, rel=1e-8)


def test_build_problem_routes_classification():
    x, y = _data(n=20)
    dataset = validate_arrays({"x": x, "y": y, "x_val": x[:5], "y_val": y[:5]})
    assert isinstance(build_problem(dataset, AuditConfig()), DeepAuditProblem)
    with pytest.raises(DatasetError, match="trusted reference"):
        build_problem(validate_arrays({"x": x, "y": y}), AuditConfig())


def test_classification_audit_renders_a_report():
    from auditor.report import build_report, render_html

    x, y = _data(n=24, length=6)
    is_poison = np.zeros(24, bool)
    is_poison[:2] = True
    dataset = validate_arrays({"x": x, "y": y, "x_val": x[:4], "y_val": y[:4], "is_poison": is_poison})
    config = AuditConfig(confirm_seeds=6)
    result = run_audit(dataset, config)
    report = build_report(result, dataset, config)
    assert report["generalization"]["metric"] == "trusted-set cross-entropy"
    assert len(report["scores"]) == 24 and "evaluation" in report
    assert set(report["evaluation"]["baselines"]) == set(SCREENS)
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "trusted-set cross-entropy" in page
