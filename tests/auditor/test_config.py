import numpy as np
import pytest
from pydantic import ValidationError

from auditor.audit import build_problem
from auditor.benchmarks import BenchmarkSpec, make_benchmark
from auditor.config import AuditConfig
from auditor.data import validate_arrays
from auditor.trials import Trial, run_trials


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        AuditConfig(max_step=10)


def test_the_default_step_cap_lets_slow_length_9_sets_fit():
    # The less energetic half of a clean set of length 9 fits only after ~25 000 steps;
    # stopped at 20 000 its model has not learned to extrapolate (error 0.999 there).
    arrays = make_benchmark(BenchmarkSpec("clean", n=200, length=9, seed=7009))
    energy = (arrays["x"] ** 2).sum(axis=1)
    weak_half = energy <= np.median(energy)
    outcome, = run_trials(build_problem(validate_arrays(arrays), AuditConfig()), [Trial(weak_half, 0)])
    assert outcome.converged and outcome.error < 0.3
