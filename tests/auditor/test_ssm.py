import math

import torch

from auditor.ssm import SSMSpec, forward, impulse_response, init_params, reverse_time, teacher_params
from auditor.tf_random import stateless_normal


def _recurrence(params, x):
    """Eq. (1) step by step: h_t = A h_{t-1} + B x_t, y = C h_K (model 0)."""
    a, b, c = params["a"][0], params["b"][0], params["c"][0]
    h = torch.zeros_like(a)
    for t in range(x.shape[0]):
        h = a * h + b * x[t]
    return (c * h).sum()


def test_convolution_form_equals_the_recurrence_at_any_length():
    params = init_params(SSMSpec(state_dim=5, sigma_a=0.4, sigma_b=0.4, sigma_c=0.4), [3])
    for length in (1, 6, 40):
        x = torch.randn(3, length, dtype=torch.float64)
        got = forward(params, reverse_time(x))[0]
        want = torch.stack([_recurrence(params, x[i]) for i in range(3)])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_paper_teachers():
    torch.testing.assert_close(impulse_response(teacher_params(), 5), torch.ones(1, 5, dtype=torch.float64))
    kt = impulse_response(teacher_params(state_dim=10), 4)[0]
    assert kt.tolist() == [10.0, 1.0, 1.0, 1.0]
    net = teacher_params(width=15)
    x = torch.tensor([[1.0, 2.0, -0.5], [-3.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(forward(net, reverse_time(x))[0], torch.tensor([7.5 * 2.5, 0.0], dtype=torch.float64))


def test_init_follows_the_paper_and_depends_only_on_the_seed():
    spec = SSMSpec(state_dim=10, sigma_a=1e-3)
    p = init_params(spec, [200, 201])
    a, b = p["a"][0], p["b"][0]
    assert (a[:-1] >= a[1:]).all() and (b[:-1] >= b[1:]).all()
    gap = 0.05 * math.exp(-5 * 3)
    assert abs((a[0] - a[1]).item() - gap) < 1e-15 and abs((b[0] - b[1]).item() - gap) < 1e-15
    assert 0.1 < a.min() and a.max() < 0.11
    alone = init_params(spec, [201], dtype=torch.float32)
    torch.testing.assert_close(alone["a"][0], p["a"][1].float())


def test_network_shapes():
    p = init_params(SSMSpec(state_dim=4, width=7), [0, 1, 2])
    assert p["w1"].shape == (3, 7, 1) and p["w2"].shape == (3, 7, 7) and p["w3"].shape == (3, 1, 7)
    assert forward(p, torch.randn(5, 9, dtype=torch.float64)).shape == (3, 5)


def test_keras_init_is_the_authors_layout_of_one_tensorflow_stream():
    spec = SSMSpec(state_dim=4, sigma_a=0.01, sigma_b=0.02, sigma_c=0.03, offset=0.001, gap=0.5, width=3,
                   sigma_mlp=0.1, init="keras")
    p = {k: v[0] for k, v in init_params(spec, [4540]).items()}
    z = torch.tensor(stateless_normal(16, seed=(4540, 0)), dtype=torch.float64)
    near = 0.05 * math.exp(-0.5 * 2)
    a = (0.01 * z[[0, 5, 10, 15]]).abs().sort(descending=True).values           # diagonal of the (d, d) draw
    b = (0.02 * z[:4]).abs().sort(descending=True).values
    assert torch.allclose(p["a"][[0, 2, 3]], a[[0, 2, 3]] + 0.001, rtol=1e-6)
    assert torch.allclose(p["a"][1], a[0] - near + 0.001, rtol=1e-5)
    assert torch.allclose(p["b"][[0, 2, 3]], b[[0, 2, 3]] + 0.001, rtol=1e-6)
    assert torch.allclose(p["c"], (0.03 * z[:4]).abs().flip(0), rtol=1e-6)    # reversed, not sorted
    assert torch.allclose(p["w1"][:, 0], 0.1 * z[:3], rtol=1e-6)
    assert torch.equal(p["w3"][0], p["w1"][:, 0])                             # one stream, same shape
    assert torch.allclose(p["w2"], 0.1 * z[:9].reshape(3, 3).T, rtol=1e-6)    # x @ W kernels, transposed
    assert torch.equal(init_params(spec, [4540])["a"][0], p["a"])             # depends only on the seed
