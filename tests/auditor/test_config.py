import numpy as np
import pytest
from pydantic import ValidationError

from auditor.engine import build_problem
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


def test_confirm_seeds_are_at_least_the_fewest_that_can_confirm_at_the_audits_level():
    from auditor.config import ALPHA
    from auditor.search.stats import least_seeds, sign_flip_test
    from auditor.search.oracle import Context

    assert ALPHA == Context(n=1).alpha and least_seeds(alpha=ALPHA) == 6
    assert AuditConfig(confirm_seeds=6).confirm_seeds == 6
    with pytest.raises(ValidationError, match="confirm_seeds"):
        AuditConfig(confirm_seeds=5)
    assert sign_flip_test(np.ones(2)) == 0.25                   # what 2 seeds, once allowed, could reach


def test_a_config_stored_with_too_few_confirmation_seeds_still_loads():
    import pytest
    from pydantic import ValidationError

    from auditor.config import AuditConfig

    with pytest.raises(ValidationError):
        AuditConfig(confirm_seeds=3)                           # new configs are held to the minimum
    stored = AuditConfig.from_stored({"confirm_seeds": 3, "strategy": "group"})
    assert stored.confirm_seeds == AuditConfig.model_fields["confirm_seeds"].metadata[0].ge
    assert stored.strategy == "group" and AuditConfig.from_stored({"confirm_seeds": 9}).confirm_seeds == 9
