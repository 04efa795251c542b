"""The audit configuration: one schema shared by the CLI, the API and the workers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auditor.search.stats import ALPHA, least_seeds

Strategy = Literal["auto", "loo", "banzhaf", "group", "core"]


class AuditConfig(BaseModel):
    """How an audit searches, what it trains and how it confirms.

    Unknown fields are refused, so a typo in a config is an error rather than a default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = Field("auto", description="subset-selection strategy; auto picks by n and budget")
    budget: int | None = Field(None, ge=1, le=1_000_000, description="most models to train in the search")
    # 8: the training's error is bimodal across seeds, so a real effect needs them (measured on a
    # decoys set, n = 1000, seed 110: a 3.3x effect had t-test p = 0.053 over 6 seeds, 0.009 over 8).
    # At least least_seeds(alpha=ALPHA) = 6: the confirmation's sign-flip tests cannot give a p-value
    # below 2^-S over S seeds, so that with fewer than 5 nothing could be confirmed, and from 6 on one
    # seed that goes the wrong way (the smallest) does not veto the verdict (p = 2/64)
    confirm_seeds: int = Field(8, ge=least_seeds(alpha=ALPHA), le=64,
                               description="seeds of the confirmation round (up to twice as many when the "
                               f"search leaves enough of its budget unused); at least {least_seeds(alpha=ALPHA)}, "
                               f"the fewest with which its sign-flip tests can confirm at level {ALPHA:g} "
                               "despite one dissenting seed")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="base seed; every trial's seed derives from it")
    model: str = Field("ssm", max_length=300,
                       description="the student trained in each trial: a registered model (ssm, network, "
                       "s4d, or an installed package's entry point in the group auditor.models) or "
                       "module:attr (see docs/models.md); classification sets train s4d unless another "
                       "model than ssm or network is named")

    @field_validator("model")
    @classmethod
    def _registered_or_import_path(cls, value: str) -> str:
        from auditor.models import check_model_name

        return check_model_name(value, allow_import=True)

    mode: Literal["blind", "forensics"] = Field(
        "blind", description="blind: every model is scored on the trusted reference set (x_val, y_val); "
        "forensics: on the known attacked example (x_target, y_target), to find the poisons behind one "
        "misclassified example (docs/data.md)")
    deep_init: Literal["s4d-lin", "s4d-inv", "s4d-legs"] = Field(
        "s4d-lin", description="initial diagonal A of the s4d classifier: S4D-Lin, S4D-Inv or S4D-LegS "
        "(auditor.deep.initial_a, docs/models.md)")
    state_dim: int = Field(10, ge=1, le=512, description="SSM state dimension d")
    # 50 000: training slows with the sequence length (measured on clean sets of 200: 6 000 steps
    # to fit at length 6, 10 000 at 8, 18 000-20 000 at 9), and a model stopped before it fits
    # shows no implicit bias yet (n = 700, length 9: two cores of 64 of the least suspicious
    # examples and their pool of 444, stopped at 20 000 steps, had errors 0.015-12.9, four of six
    # above 0.6; all fitted by 24 000 steps, at 0.08-0.12; the audit found none of the 42 poisons
    # with a cap of 20 000 and 41 with 50 000). From length 10 on, clean sets had not reached the
    # fitting threshold after 150 000 steps (error 0.18-0.53): there the cap is what stops them
    max_steps: int = Field(50_000, ge=10, le=1_000_000, description="cap on optimizer steps per model")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")

    @classmethod
    def from_stored(cls, raw: dict) -> "AuditConfig":
        """The config of an audit stored by an earlier version, which allowed fewer
        confirmation seeds than its tests need: those get the fewest that can confirm."""
        least = least_seeds(alpha=ALPHA)
        if isinstance(raw.get("confirm_seeds"), int) and raw["confirm_seeds"] < least:
            raw = raw | {"confirm_seeds": least}
        return cls(**raw)


def planned_trials(config: AuditConfig, *, n: int, task: str) -> int:
    """The most trials an audit of ``n`` examples (``task`` regression or classification) trains.

    Its resolved search budget (:func:`auditor.search.plan.resolve`) plus the confirmation
    round's three arms over ``confirm_seeds`` seeds, and as many again for the harm gate of
    the strategies that have one (:data:`auditor.search.plan.GATED`); the extra confirmation
    seeds are paid for by the search's unused budget.
    """
    from auditor.search.plan import GATED, resolve

    name, budget = resolve(config.strategy, n=n, budget=config.budget, task=task)
    return budget + 3 * config.confirm_seeds * (2 if name in GATED else 1)


def trial_steps(config: AuditConfig, *, n: int, task: str) -> int:
    """An audit's cost: :func:`planned_trials` times ``max_steps``, the most optimizer steps it runs."""
    return planned_trials(config, n=n, task=task) * config.max_steps
