import torch

from auditor.metrics import effective_rank, extrapolation_error, hankel_effective_rank, reference_mse, relative_error
from auditor.ssm import teacher_params


def test_extrapolation_error_of_the_teacher_is_zero_and_scales():
    t = teacher_params()
    assert extrapolation_error(t, t, horizon=40).item() == 0.0
    student = {k: v.clone() for k, v in t.items()}
    student["a"] = student["a"] * 1.01                      # kappa_j = 1.01^(j-1)
    expected = 1.01 ** 39 - 1
    assert abs(extrapolation_error(student, t, horizon=40).item() - expected) < 1e-12


def test_effective_rank_extremes():
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [-0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(effective_rank(a), torch.tensor([1.0, 4.0, 4.0], dtype=torch.float64))


def test_relative_error_and_reference_loss_on_longer_sequences():
    t = teacher_params()
    x = torch.randn(10, 50, dtype=torch.float64)
    y = x.sum(1)
    assert reference_mse(t, x, y).item() < 1e-24
    assert relative_error(2 * y.unsqueeze(0), y).item() == 1.0


def test_hankel_effective_rank_counts_a_kernels_modes_whatever_its_scale_and_realization():
    from auditor.ssm import impulse_response
    t = torch.arange(40, dtype=torch.float64)
    one, two = 0.9 ** t, 0.9 ** t + (-0.6) ** t
    ranks = hankel_effective_rank(torch.stack([one, 100 * one, two, torch.zeros(40, dtype=torch.float64)]))
    assert abs(float(ranks[0]) - 1) < 1e-9 and abs(float(ranks[1]) - 1) < 1e-9     # one mode, at any scale
    assert 1.3 < float(ranks[2]) < 2.0 + 1e-9                                      # two modes: up to 2
    assert float(ranks[3]) == 1.0
    # the same kernel from two parametrizations (B scaled up, C down) has the same rank
    a = torch.tensor([[0.9, -0.6]], dtype=torch.float64)
    params = {"a": a.repeat(2, 1), "b": torch.tensor([[1.0, 1.0], [10.0, 10.0]], dtype=torch.float64),
              "c": torch.tensor([[1.0, 1.0], [0.1, 0.1]], dtype=torch.float64)}
    r = hankel_effective_rank(impulse_response(params, 40))
    assert torch.allclose(r[0], r[1]) and torch.allclose(r[0], ranks[2])
