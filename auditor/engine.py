"""The audit loop: a strategy, an executor and the outcomes stored so far.

    outcomes = stored outcomes (empty for a new audit)
    repeat:
        step = plan(strategy, context, outcomes)      # pure
        if step is a verdict: stop
        run the step's trials on the executor, store each outcome as it arrives

Because trials are deterministic and the strategy is replayed from the outcomes, an audit
that is stopped and restarted with its stored outcomes retrains nothing it already has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from auditor.config import AuditConfig, planned_trials
from auditor.data import Dataset, with_reference
from auditor.executors import Executor, InlineExecutor
from auditor.search.oracle import Context, Verdict
from auditor.search.plan import plan, resolve
from auditor.trials import Outcome, Problem, Screened, Trial, curves_of, mechanism_of, screens_of

Progress = Callable[[int, int, str], None]          # (trials done, trials expected, phase)


def build_problem(dataset: Dataset, config: AuditConfig, *, allow_import: bool = True) -> Problem:
    """The student and optimizer an audit of ``dataset`` trains, from its config.

    The model comes from the registry (:mod:`auditor.models`): ``config.model`` names a
    built-in, an installed entry point or ``module:attr``. Integer labels (classification)
    get deep S4D classifiers scored by their trusted-set cross-entropy
    (:mod:`auditor.deep_problem`) unless a model other than the paper's regression students
    is named; float labels the paper's SSM students by default. Models are scored on the
    reference set of ``config.mode`` (:func:`auditor.data.with_reference`). ``allow_import=False``
    refuses ``module:attr`` (services: a client must not name code to import).
    """
    from auditor.models import model_for

    dataset = with_reference(dataset, mode=config.mode)
    return model_for(dataset, config, allow_import=allow_import).problem(dataset, config)


@dataclass
class AuditResult:
    """Everything an audit produced; :mod:`auditor.report` renders it."""

    verdict: Verdict
    strategy: str
    budget: int
    outcomes: dict[str, Outcome]
    screens: dict[str, np.ndarray]
    kernels: dict[str, list[float]]
    metric: str
    seconds: float

    @property
    def fit(self) -> dict:
        """Whether the audit's models fitted their training sets (:func:`fit_status`)."""
        return fit_status(self.outcomes.values())


NOT_FITTED_SHARE = 0.5    # "most models": above this share of unconverged trials the audit has no verdict


def fit_status(outcomes) -> dict:
    """How many of the trials' models stopped at ``max_steps`` before their training loss
    reached the fitting threshold, and whether most did (``fitted`` False).

    A model that has not fitted its data shows no implicit bias yet, so its error says
    nothing about harm: an audit whose models mostly did not fit cannot call a set clean
    (nor confirm that removing a set helps, beyond the unfitted models).

    Returns
    -------
    dict with ``trials``, ``unconverged``, ``share_unconverged`` and ``fitted``.
    """
    converged = [bool(o.converged) for o in outcomes]
    unconverged = converged.count(False)
    share = unconverged / len(converged) if converged else 0.0
    return {"trials": len(converged), "unconverged": unconverged, "share_unconverged": share,
            "fitted": share <= NOT_FITTED_SHARE}


def run_audit(dataset: Dataset, config: AuditConfig, *, executor: Executor | None = None,
              outcomes: dict[str, Outcome] | None = None,
              store: Callable[[list[tuple[Trial, Outcome]]], None] | None = None,
              progress: Progress | None = None, screens: dict[str, np.ndarray] | None = None) -> AuditResult:
    """Audit ``dataset``: screen, search, confirm.

    Parameters
    ----------
    dataset : Dataset
    config : AuditConfig
    executor : Executor, optional
        Where trials train, built on ``build_problem(dataset, config)``; in-process by
        default. Setting its ``stop`` event cancels the audit:
        :class:`auditor.executors.Canceled` is raised, stored outcomes stand.
    outcomes : dict, optional
        Outcomes already stored for this audit (resume); updated in place.
    store : callable, optional
        Called with every chunk of new (trial, outcome) pairs as it arrives (persistence).
    progress : callable, optional
        Called as (trials done, trials expected, phase): the trials with an outcome so far
        (stored ones included) out of :func:`auditor.config.planned_trials` (or as many as are done, if
        more), while the phase is ``screening``, ``search (STRATEGY)`` or ``confirmation``.
    screens : dict, optional
        Precomputed screen scores (else computed here from one training run).
    """
    start = time.perf_counter()
    executor = executor or InlineExecutor(build_problem(dataset, config))
    problem = executor.problem
    strategy, budget = resolve(config.strategy, n=dataset.n, budget=config.budget, task=dataset.task)
    outcomes = {} if outcomes is None else outcomes
    expected = planned_trials(config, n=dataset.n, task=dataset.task)
    if screens is None:
        if progress:
            progress(len(outcomes), max(expected, len(outcomes)), "screening")
        screens = screens_of(problem, seed=config.seed)[0]
    context = search_context(problem, screens, config=config, budget=budget)
    while True:
        step = plan(strategy, context, outcomes)
        if isinstance(step, Verdict):
            break
        by_key = {t.key: t for t in step}
        phase = _phase(step, context, strategy)
        if progress:
            progress(len(outcomes), max(expected, len(outcomes)), phase)
        for chunk in executor.run(step):
            outcomes.update({o.key: o for o in chunk})
            if store:
                store([(by_key[o.key], o) for o in chunk])
            if progress:
                progress(len(outcomes), max(expected, len(outcomes)), phase)
    # (the screens' and the kernels' training runs are diagnostics, not trials: not counted)
    kernels = curves_of(problem, step.flagged, seed=step.confirmation["seeds"][0])
    return AuditResult(verdict=step, strategy=strategy, budget=budget, outcomes=outcomes,
                       screens=screens, kernels=kernels,
                       metric=scored_on(problem.metric, mode=config.mode), seconds=time.perf_counter() - start)


def scored_on(metric: str, *, mode: str) -> str:
    """The name of what the models are scored by in ``mode``: in ``forensics`` mode the
    attacked example(s) stand in for the trusted set (:func:`auditor.data.with_reference`)."""
    return metric.replace("trusted-set", "target", 1) if mode == "forensics" else metric


def _phase(step: list[Trial], context: Context, strategy: str) -> str:
    """``confirmation`` for the confirmation round (its seeds lie beyond the search seeds),
    else ``search (STRATEGY)``."""
    if min(t.seed for t in step) >= context.seed + context.search_seeds:
        return "confirmation"
    return f"search ({strategy})"


def search_context(problem, screens: dict[str, np.ndarray], *, config: AuditConfig, budget: int) -> Context:
    """What the strategy knows of ``problem`` besides outcomes: its size, the order its
    screens give the search, and the statistic of its mechanism."""
    names = problem.ordering if isinstance(problem, Screened) else ()
    named = tuple((name, np.asarray(screens[name], float)) for name in names if name in screens)
    return Context(n=problem.n, seed=config.seed, budget=budget, confirm_seeds=config.confirm_seeds,
                   screen=_rank_max([s for _, s in named]) if named else None, screens=named,
                   mechanism=mechanism_of(problem))


def _rank_max(columns: list[np.ndarray]) -> np.ndarray:
    """Each example's highest normalized rank over the screens, in [0, 1]."""
    ranks = [stats.rankdata(np.asarray(c, float), method="min") - 1 for c in columns]   # ties: lowest rank
    return np.max(ranks, axis=0) / max(len(columns[0]) - 1, 1)
