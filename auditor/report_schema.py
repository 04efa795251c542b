"""The audit report's types: :class:`Report` and its parts.

:func:`auditor.report.build_report` validates every report it builds against
:class:`Report`, so the types say exactly what a report holds. The report's JSON schema
(``auditor report-schema``, ``docs/report.schema.json``) and the API's response schema for
``GET /api/v1/audits/{id}/report`` are generated from them. Floats are ``None`` where they are
not finite (JSON has no NaN). ``details`` stays an open object: it holds the strategy's own
facts (see docs/report.md).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Number = float | None                    # None where not finite


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fit(_Part):
    """How many models fitted their training set (:func:`auditor.engine.fit_status`)."""

    trials: int = Field(description="models trained")
    unconverged: int = Field(description="models that stopped at max_steps before fitting")
    share_unconverged: float
    fitted: bool = Field(description="false when most models did not fit: the verdict is then not_fitted")


class ErrorSummary(_Part):
    """One arm of the confirmation: models trained under each confirmation seed."""

    errors: list[Number] = Field(description="the error under each seed")
    geomean: Number = Field(description="geometric mean over the seeds")
    ci95: list[Number] = Field(description="95% percentile-bootstrap interval of the geometric mean (descriptive)")
    extras: dict[str, Number] = Field(description="the mean of each of the models' diagnostics, e.g. effective_rank")


class Generalization(_Part):
    metric: str = Field(description="what the models are scored by, e.g. 'trusted-set relative error'")
    with_all: ErrorSummary | None = None
    without_flagged: ErrorSummary | None = None
    without_random: ErrorSummary | None = Field(None, description="without a fresh random set of the same size "
                                                                  "under each seed")


class DiagnosticDrop(_Part):
    """How removing the tested set moved one diagnostic of the models (evidence, decides nothing)."""

    drop: Number = Field(description="mean paired drop (all data minus without the set)")
    ci95: list[Number] = Field(description="95% sign-flip interval of the drop")
    p_value: Number = Field(description="one-sided sign-flip p-value of no drop")


class Confirmation(_Part):
    """The confirmation round (:func:`auditor.search.confirm.confirm`) over fresh seeds."""

    confirmed: bool = Field(description="the verdict: harm confirmed and, where checked, the mechanism too")
    tested: list[int] = Field(description="the set the round removed: the flagged set, or the candidates it "
                                          "failed to confirm")
    seeds: list[int] = []
    p_value: Number = Field(None, description="one-sided sign-flip p-value: removing the set lowers the error by "
                                              "at most the 20% margin")
    effect_log_ratio: Number = None
    effect_ci95: list[Number] | None = None
    error_ratio: Number = Field(None, description="geometric mean of error(all) / error(without the set)")
    p_value_vs_random: Number = None
    error_ratio_vs_random: Number = None
    rank_drop: Number = None
    rank_drop_ci95: list[Number] | None = None
    p_value_rank: Number = None
    harm_confirmed: bool | None = Field(None, description="the error tests passed")
    rank_checked: bool | None = Field(None, description="whether the verdict also required the rank of A to drop")
    diagnostics: dict[str, DiagnosticDrop] = {}


class EvidenceRecord(_Part):
    """One example the verdict singles out (:func:`auditor.evidence.build_evidence`)."""

    index: int
    role: Literal["flagged", "without_mechanism", "unconfirmed"]
    score: Number
    label: Any = Field(description="its label: an integer, a float, or a list for several outputs")
    sequence: list[Any] = Field(description="its values, (k,) or (k, channels)")
    is_poison: bool | None = Field(None, description="ground truth, where the data set has it")
    decided_by: str | None = Field(None, description="the test that decided it, in words")
    test: str | None = None
    base: str | None = Field(None, description="what it was added to when tested")
    group_size: int | None = None
    seeds: list[int] | None = None
    harm_log: list[Number] | None = Field(None, description="per seed: log of the error with it over the "
                                                            "reference error")
    harm_ratio: list[Number] | None = None
    harm_ratio_mean: Number = None
    harm_ratio_ci95: list[Number] | None = None
    control_ratio: list[Number] | None = Field(None, description="per seed: the most a control moved the error")
    threshold_ratio: list[Number] | None = None
    rank_rise: list[Number] | None = None
    rank_band: list[Number] | None = None
    second_core_ratio: Number = None


class SequenceProfile(_Part):
    examples: int = Field(description="examples summarized (those the evidence does not single out)")
    median: list[Any]
    q10: list[Any]
    q90: list[Any]


class Ranking(_Part):
    auroc: Number
    precision_at_k: Number
    recall_at_k: Number


class Evaluation(_Part):
    """Only with ground truth (``is_poison``): how the verdict and the screens did."""

    precision: Number
    recall: Number
    true_positives: int
    n_flagged: int
    n_poisons: int
    auroc: Number
    precision_at_k: Number
    recall_at_k: Number
    k: int
    poisons: list[int]
    baselines: dict[str, Ranking]


class Reproduce(_Part):
    dataset_sha256: str | None
    dataset: dict[str, Any] = Field(description="the data set's summary (docs/data.md)")
    config: dict[str, Any] = Field(description="the AuditConfig, as JSON")
    versions: dict[str, str | None]
    device: str
    platform: str


class Report(_Part):
    """An audit report (docs/report.md)."""

    flagged: list[int] = Field(description="sorted example indices judged harmful")
    scores: list[Number] = Field(description="one per example, higher = more harmful")
    trials: int = Field(description="models trained")
    unconverged: int
    verdict: Literal["flagged", "nothing_flagged", "not_fitted"]
    fit: Fit
    generalization: Generalization
    confirmation: Confirmation
    strategy: str
    mode: Literal["blind", "forensics"]
    budget: int = Field(description="the search budget, in models")
    details: dict[str, Any] = Field(description="the strategy's own facts: the gate, the knee, the order followed, ...")
    screens: dict[str, list[Number]] = Field(description="each screen's per-example scores")
    kernels: dict[str, Any] = Field(description="curves for the report's plots (learned kernels)")
    seconds: Number
    reproduce: Reproduce
    evidence: list[EvidenceRecord]
    evidence_note: str | None = Field(description="why the tests' numbers are missing where they are")
    sequence_profile: SequenceProfile
    evaluation: Evaluation | None = None
    status_line: str


def report_json_schema() -> dict:
    """The JSON schema of :class:`Report`."""
    return Report.model_json_schema()


def same_schema(a: Any, b: Any) -> bool:
    """Whether two JSON schemas say the same, up to keywords written at their JSON Schema
    default (``"additionalProperties": true``, which newer pydantic writes for open objects
    and older pydantic leaves out)."""
    return _without_defaults(a) == _without_defaults(b)


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if not (k == "additionalProperties" and v is True)}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def report_json_schema_text() -> str:
    """The schema as the text of ``docs/report.schema.json``."""
    return json.dumps(report_json_schema(), indent=2, sort_keys=True) + "\n"
