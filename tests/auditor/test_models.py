"""The model registry: built-ins, installed entry points, module:attr imports, the config field
and build_problem."""

from __future__ import annotations

import pickle
import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from auditor.engine import build_problem
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.deep_problem import DeepAuditProblem
from auditor.models import BUILTINS, ModelError, check_model_name, registered_models, resolve_model
from auditor.ssm import SSMSpec
from auditor.torch_model import TorchModel, TorchProblem
from auditor.train import TrainConfig
from auditor.trials import AuditProblem

MODULE = '''
import torch
from torch import nn

import auditor


class Last(nn.Module):
    """y = w . x[:, -1, :] (the last step's channels)."""

    def __init__(self, channels=1):
        super().__init__()
        self.w = nn.Parameter(torch.randn(channels, 1) * 0.1)

    def forward(self, x):
        return x[:, -1, :] @ self.w


def factory(seed):
    return Last()


tuned = auditor.TorchModel(factory, optimizer="sgd", lr=0.05, steps=7)
not_a_model = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module importable only from a folder outside the project, plus an installed
    distribution (a .dist-info on the path) that registers it as an entry point."""
    (tmp_path / "byom_user_models.py").write_text(textwrap.dedent(MODULE))
    info = tmp_path / "byom_user_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byom-user-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[auditor.models]\nlastlin = byom_user_models:tuned\n"
                                           "lastfactory = byom_user_models:factory\n"
                                           "broken = byom_user_models_missing:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "byom_user_models"


def _regression(n=40):
    return validate_arrays(make_benchmark(BenchmarkSpec(kind="standalone", n=n, poison_fraction=0.1, length=6, seed=3)))


def test_builtins_build_todays_problems_exactly():
    dataset = _regression()
    ssm = build_problem(dataset, AuditConfig())
    assert isinstance(ssm, AuditProblem)
    assert ssm.spec == SSMSpec(state_dim=10, sigma_a=1e-3)
    assert ssm.train == TrainConfig(optimizer="gd", lr=0.01, eps=0.01, extra_steps=3000, max_steps=50_000)
    net = build_problem(dataset, AuditConfig(model="network", state_dim=4, max_steps=999))
    assert net.spec == SSMSpec(state_dim=4, sigma_a=0.01, sigma_b=0.01, sigma_c=0.01, offset=0.001, width=15,
                               sigma_mlp=0.03)
    assert net.train == TrainConfig(optimizer="adam", lr=0.01, eps=0.01, extra_steps=1000, max_steps=999)


def test_classification_sets_get_s4d_unless_another_model_is_named(user_module):
    arrays = make_benchmark(BenchmarkSpec(kind="standalone", n=30, length=6, seed=1))
    rng = np.random.default_rng(0)
    dataset = validate_arrays({"x": arrays["x"], "y": rng.integers(0, 3, 30), "x_val": arrays["x"][:10],
                               "y_val": rng.integers(0, 3, 10)})
    for name in ("ssm", "network", "s4d"):
        assert isinstance(build_problem(dataset, AuditConfig(model=name)), DeepAuditProblem)
    named = build_problem(dataset, AuditConfig(model=f"{user_module}:factory"))
    assert isinstance(named, TorchProblem) and named.loss == "cross_entropy"


def test_the_config_takes_registered_names_and_import_paths(user_module):
    assert AuditConfig().model == "ssm"
    assert AuditConfig(model="s4d").model == "s4d"
    assert AuditConfig(model="lastlin").model == "lastlin"                    # an installed entry point
    assert AuditConfig(model="some.module:attr").model == "some.module:attr"  # checked by form, imported later
    for bad in ("nope", "a:b:c", "mod:", ":x", "mod:1x", "x" * 400):
        with pytest.raises(ValidationError):
            AuditConfig(model=bad)
    with pytest.raises(ValidationError):
        AuditConfig(modle="ssm")                                              # still extra="forbid"
    with pytest.raises(ValidationError):
        AuditConfig().model = "network"                                       # still frozen
    assert AuditConfig.model_validate(AuditConfig(model="lastlin").model_dump(mode="json")).model == "lastlin"


def test_a_service_can_refuse_imports(user_module):
    assert check_model_name("lastlin", allow_import=False) == "lastlin"
    assert check_model_name("ssm", allow_import=False) == "ssm"
    with pytest.raises(ModelError, match="only registered"):
        check_model_name(f"{user_module}:factory", allow_import=False)
    with pytest.raises(ModelError, match="only registered"):
        resolve_model(f"{user_module}:factory", allow_import=False)
    assert {"ssm", "network", "s4d", "lastlin", "lastfactory"} <= set(registered_models())


def test_names_resolve_to_builders(user_module):
    assert resolve_model("ssm") is BUILTINS["ssm"]
    tuned = resolve_model("lastlin")
    assert isinstance(tuned, TorchModel) and tuned.optimizer == "sgd" and tuned.steps == 7
    wrapped = resolve_model("lastfactory")                      # a bare factory gets TorchModel's defaults
    assert isinstance(wrapped, TorchModel) and wrapped.optimizer == "adam" and wrapped.steps is None
    assert resolve_model(f"{user_module}:tuned") == tuned
    with pytest.raises(ModelError, match="failed to load"):
        resolve_model("broken")
    with pytest.raises(ModelError, match="cannot import"):
        resolve_model("no_such_module_xyz:factory")
    with pytest.raises(ModelError, match="no attribute"):
        resolve_model(f"{user_module}:missing")
    with pytest.raises(ModelError, match="expected a TorchModel"):
        resolve_model(f"{user_module}:not_a_model")


def test_a_named_user_model_runs_trials_and_pickles(user_module):
    dataset = _regression()
    problem = build_problem(dataset, AuditConfig(model="lastlin"))
    assert isinstance(problem, TorchProblem) and problem.max_steps == 7
    back = pickle.loads(pickle.dumps(problem))
    from auditor.trials import Trial

    trials = [Trial(np.arange(40) % 3 > 0, 5), Trial(np.ones(40, bool), 6)]
    assert repr(back.run(trials)) == repr(problem.run(trials))       # exact floats
    assert [o.steps for o in problem.run(trials)] == [7, 7]


@pytest.mark.parametrize("model", ["ssm", "network"])
def test_regression_students_train_on_data_scaled_to_unit_rms(model):
    """Labels x100 (and inputs /10) give the same scaled problem, so the same trained models."""
    from auditor.trials import Trial

    arrays = make_benchmark(BenchmarkSpec(n=30, seed=2))
    other = {**arrays, "x": arrays["x"] / 10, "x_val": arrays["x_val"] / 10,
             "y": arrays["y"] * 100, "y_val": arrays["y_val"] * 100}
    config = AuditConfig(model=model, max_steps=300)
    base, scaled = (build_problem(validate_arrays(a), config) for a in (arrays, other))
    assert scaled.y_scale == pytest.approx(100 * base.y_scale) and scaled.x_scale == pytest.approx(base.x_scale / 10)
    for name in ("x", "y", "x_val", "y_val"):
        np.testing.assert_allclose(getattr(scaled, name), getattr(base, name), rtol=1e-12)
    assert np.sqrt(np.mean(base.x ** 2)) == pytest.approx(1.0) and np.sqrt(np.mean(base.y ** 2)) == pytest.approx(1.0)
    trials = [Trial(np.arange(30) % 3 != k, seed=k) for k in range(3)]
    for a, b in zip(base.run(trials), scaled.run(trials)):
        assert a.error == pytest.approx(b.error, rel=1e-6) and a.converged == b.converged and a.steps == b.steps
    kernels = base.kernels([], seed=0)["with_all"], scaled.kernels([], seed=0)["with_all"]
    np.testing.assert_allclose(np.asarray(kernels[1]), 1000 * np.asarray(kernels[0]), rtol=1e-6)


@pytest.mark.slow
def test_labels_x100_audit_to_the_same_flags():
    import torch

    from auditor.engine import run_audit

    torch.set_num_threads(1)
    config = AuditConfig(confirm_seeds=6)
    flags = []
    for scale in (1.0, 100.0):
        arrays = make_benchmark(BenchmarkSpec(n=40, seed=1, label_scale=scale))
        result = run_audit(validate_arrays(arrays), config)
        assert result.fit["fitted"]
        flags.append(result.verdict.flagged)
    assert flags[0] == flags[1] and flags[0]
