import torch

from auditor.metrics import effective_rank, extrapolation_error, reference_mse, relative_error
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
