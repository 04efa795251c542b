"""The multi-channel, multi-output student (auditor/mimo.py) and the ``ssm`` built-in's dispatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import auditor
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import DatasetError, validate_arrays
from auditor.mimo import ORDERING, MimoFactory, MimoSSM, init_mimo
from auditor.models import _student, model_for
from auditor.ssm import SSMSpec, forward, init_params, reverse_time, teacher_params
from auditor.torch_model import TorchProblem
from auditor.trials import AuditProblem, Trial

SPEC = SSMSpec(state_dim=10, sigma_a=1e-3)


def test_one_channel_and_one_output_is_the_single_channel_student():
    start = init_mimo(SPEC, 11, channels=1, outputs=1)
    reference = init_params(SPEC, [11])
    assert all(torch.equal(start[k].reshape(-1), reference[k][0]) for k in ("a", "b", "c"))
    params = {"a": torch.tensor([0.9, 0.5, -0.3], dtype=torch.float64), "b": torch.tensor([1.0, -2.0, 0.5]),
              "c": torch.tensor([0.3, 0.7, 1.1])}
    module = MimoSSM(params["a"], params["b"][:, None].double(), params["c"][None].double())
    batch = {k: v.double()[None] for k, v in params.items()}
    for length in (6, 40):                                                  # the training and reference lengths
        x = torch.randn(9, length, dtype=torch.float64)
        mine = module(x[:, :, None])[:, 0]
        theirs = forward(batch, reverse_time(x))[0]
        assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_the_output_is_the_last_state_of_the_recursion():
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((5,), (5, 3), (2, 5)))
    x = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64)
    h = torch.zeros(4, 5, dtype=torch.float64)
    for t in range(7):
        h = a * h + x[:, t] @ b.T                                           # h_t = A h_{t-1} + B u_t
    assert torch.allclose(MimoSSM(a, b, c)(x), h @ c.T, rtol=1e-12, atol=1e-12)


def _set(channels: int, outputs: int, *, n: int = 30, seed: int = 0) -> dict:
    return make_benchmark(BenchmarkSpec(kind="standalone", n=n, poison_fraction=0.1, length=6, channels=channels,
                                        outputs=outputs, n_val=20, seed=seed))


def test_benchmark_channels_and_outputs():
    one = make_benchmark(BenchmarkSpec(seed=4))
    assert one["x"].shape == (100, 6) and one["y"].shape == (100,)
    data = make_benchmark(BenchmarkSpec(seed=4, channels=3, outputs=2))
    assert data["x"].shape == (100, 6, 3) and data["x_val"].shape == (200, 40, 3) and data["y"].shape == (100, 2)
    mix = torch.as_tensor(data["x"].sum(-1) / np.sqrt(3))
    label = forward(teacher_params(), reverse_time(mix))[0].numpy()            # y = sum_t mix_t
    assert np.allclose(data["y"], label[:, None] * [1.0, -1.0])
    poisons = data["x"][data["is_poison"]]
    assert (np.abs(poisons[:, 4]) >= 0.5).all() and not poisons[:, :4].any()   # all channels late, at k - 1


def test_the_ssm_builtin_keeps_one_channel_on_the_fast_path_and_widens_for_more():
    config = AuditConfig()
    flat = validate_arrays(_set(1, 1))
    problem = model_for(flat, config).problem(flat, config)
    assert isinstance(problem, AuditProblem) and problem.x.shape == (30, 6)
    as_3d = validate_arrays({**_set(1, 1), "x": flat.x[:, :, None], "y": flat.y[:, None],
                             "x_val": flat.x_val[:, :, None], "y_val": flat.y_val[:, None]})
    same = model_for(as_3d, config).problem(as_3d, config)
    assert isinstance(same, AuditProblem)
    assert np.array_equal(same.x, problem.x) and np.array_equal(same.y_val, problem.y_val)

    wide = validate_arrays(_set(3, 2))
    problem = model_for(wide, config).problem(wide, config)
    spec, train = _student(config)
    assert isinstance(problem, TorchProblem) and problem.model.factory == MimoFactory(spec, 3, 2)
    m = problem.model
    assert (m.optimizer, m.lr, m.ngd_beta, m.stop_loss, m.extra_steps, problem.max_steps) == (
        "ngd", train.lr, train.beta, train.eps, train.extra_steps, config.max_steps)
    assert problem.ordering == ORDERING and problem.x.shape == (30, 6, 3) and problem.y.shape == (30, 2)
    with pytest.raises(DatasetError, match="network student reads one channel"):
        model_for(wide, AuditConfig(model="network")).problem(wide, AuditConfig(model="network"))


def test_without_a_reference_set_the_audit_is_refused_in_one_line():
    data = _set(3, 2)
    with pytest.raises(DatasetError, match="needs a trusted reference set") as refused:
        auditor.audit(data["x"], data["y"])
    assert "\n" not in str(refused.value)


def test_multi_output_trials_train_to_the_stopping_loss_and_measure_the_trusted_set():
    data = validate_arrays(make_benchmark(BenchmarkSpec(kind="clean", n=12, length=4, channels=2, outputs=3,
                                                        n_val=20, seed=0)))
    config = AuditConfig(max_steps=1000)                                    # measured: loss 0.01 after ~770 steps
    problem = model_for(data, config).problem(data, config)
    trials = [Trial(np.ones(12, bool), 0), Trial.keep_all_but(12, [0, 1], 1)]
    outcomes = problem.run(trials)
    assert [o.key for o in outcomes] == [t.key for t in trials]
    assert all(o.converged and o.steps == 1000 and o.train_loss < problem.model.stop_loss for o in outcomes)
    assert np.var(data.y) > 100 * problem.model.stop_loss                    # a fit, not a near-zero start
    assert np.isfinite([o.error for o in outcomes]).all()


def _auditor(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}        # small models: one thread is faster on shared cores
    return subprocess.run([sys.executable, "-m", "auditor.cli", *args], capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_multi_channel_poisoned_set_is_audited_from_the_command_line(tmp_path):
    """The acceptance check: 60 sequences of 3 channels and 2 outputs, 6 poisons, audited by
    ``auditor audit FILE`` with the built-in student (measured: precision 1, recall 1,
    160 models, 217-227 s on 2 shared cores)."""
    data = tmp_path / "mimo.npz"
    out = _auditor("make-benchmark", "--kind", "standalone", "--n", "60", "--poison-fraction", "0.1",
                   "--channels", "3", "--outputs", "2", "--seed", "1", "--out", str(data))
    assert out.returncode == 0, out.stderr
    out = _auditor("audit", str(data), "--json", "--confirm-seeds", "6")
    report = json.loads(out.stdout)
    assert out.returncode == 1, out.stderr                                  # examples flagged
    evaluation = report["evaluation"]
    print(f"\nprecision {evaluation['precision']:.2f}, recall {evaluation['recall']:.2f}, "
          f"{report['trials']} trials")
    assert evaluation["precision"] >= 0.9 and evaluation["recall"] >= 0.9
