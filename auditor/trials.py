"""Trials and their outcomes: the unit of work of an audit.

A *trial* is (mask over the n training examples, seed): train one student on the masked
set from that seed. Its *outcome* is what the trained model shows: the error on the trusted
reference set (or, without one, a label-free implicit-bias diagnostic), the train loss and
the model's own diagnostics (``extras``). Trials are deterministic given their mask and seed, so their key
identifies the result: a retried or duplicated trial is harmless and stored outcomes are
never recomputed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from auditor.metrics import effective_rank, hankel_effective_rank, reference_relative_error
from auditor.ssm import SSMSpec, impulse_response
from auditor.train import TrainConfig, train_many


@dataclass(frozen=True, eq=False)
class Trial:
    """Train on ``mask`` (bool (n,)) from ``seed``."""

    mask: np.ndarray
    seed: int

    @property
    def key(self) -> str:
        """Stable identity: sha256 of the packed mask, its length and the seed (24 hex digits)."""
        packed = np.packbits(np.asarray(self.mask, bool)).tobytes()
        digest = hashlib.sha256(packed + len(self.mask).to_bytes(8, "little") + self.seed.to_bytes(8, "little"))
        return digest.hexdigest()[:24]

    @property
    def size(self) -> int:
        return int(np.count_nonzero(self.mask))

    @classmethod
    def keep_all_but(cls, n: int, removed, seed: int) -> "Trial":
        mask = np.ones(n, bool)
        mask[np.asarray(list(removed), dtype=int)] = False
        return cls(mask, seed)

    @classmethod
    def keep_only(cls, n: int, kept, seed: int) -> "Trial":
        mask = np.zeros(n, bool)
        mask[np.asarray(list(kept), dtype=int)] = True
        return cls(mask, seed)


@dataclass(frozen=True)
class Outcome:
    """What the model of one trial shows.

    Attributes
    ----------
    key : the trial's key
    error : float
        The audit's generalization measure (lower is better), as the problem's ``metric``
        says: e.g. the relative error on the trusted reference set.
    train_loss : float
    converged : bool
        Whether training met its stopping rule before its step cap.
    steps : int
    extras : dict[str, float]
        The model's own diagnostics, by name (e.g. ``effective_rank`` of A for the paper's
        SSM students); empty for a model without any. Absent and NaN mean "not measured".
    """

    key: str
    error: float
    train_loss: float
    converged: bool
    steps: int
    extras: dict[str, float] = field(default_factory=dict)

    def extra(self, name: str | None) -> float:
        """The diagnostic ``name`` (NaN where the model does not report it)."""
        value = self.extras.get(name) if name else None
        return math.nan if value is None else float(value)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in GENERIC} | {"extras": dict(self.extras)}

    @classmethod
    def from_dict(cls, d: dict) -> "Outcome":
        """The outcome ``to_dict`` wrote, now or before ``extras`` existed (when a model's
        diagnostics sat beside the generic fields, as ``effective_rank`` did). A float stored
        as null (JSON has no NaN) is NaN again."""
        values = {name: d[name] for name in GENERIC}
        for name in ("error", "train_loss"):
            values[name] = _float(values[name])
        legacy = {name: value for name, value in d.items() if name not in GENERIC and name != "extras"}
        extras = {name: _float(value) for name, value in (legacy | dict(d.get("extras") or {})).items()}
        return cls(**values, extras=extras)


GENERIC = ("key", "error", "train_loss", "converged", "steps")     # what every model's outcome has


def _float(value) -> float:
    return math.nan if value is None else float(value)


class Problem(Protocol):
    """What an audit retrains: any student on any data. The engine needs only these three
    members; the optional capabilities below are separate protocols.

    A problem crosses process boundaries (Ray pickles it to its workers), so it must be
    picklable: plain data and importable classes, no lambdas or open handles.
    """

    @property
    def n(self) -> int:
        """Training examples."""

    @property
    def metric(self) -> str:
        """What an outcome's ``error`` measures, in words."""

    def run(self, trials: list[Trial]) -> list[Outcome]:
        """Train every trial's model (batched); outcomes in the trials' order."""


@runtime_checkable
class Screened(Protocol):
    """A problem that scores examples before the search, to order it (never to cap it)."""

    ordering: tuple[str, ...]       # screens whose scores order the search (each example's highest rank)

    def screens(self, *, seed: int) -> dict[str, np.ndarray]:
        """Per-example screen scores (higher = more suspicious) from one training run."""


@runtime_checkable
class Diagnosed(Protocol):
    """A problem whose outcomes carry a statistic of the implicit bias the poisons distort."""

    # the name of that statistic in ``Outcome.extras`` (``effective_rank`` for the paper's
    # SSM students: poisons raise the effective rank of A), or None where the model's extras
    # are diagnostics only; a verdict then also needs removing the flagged set to lower it
    mechanism: str | None


@runtime_checkable
class Curved(Protocol):
    """A problem that draws curves for the report."""

    def kernels(self, flagged: list[int], *, seed: int) -> dict[str, list[float]]:
        """Curves of the model trained on all data (``with_all``) and without the flagged set
        (``without_flagged``)."""


@runtime_checkable
class Placeable(Protocol):
    """A problem that can move to another device (a worker's own GPU or CPU)."""

    def on_device(self, device: str) -> "Problem":
        """The same problem run on ``device``."""


def screens_of(problem: Problem, *, seed: int) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The problem's screen scores and the names that order the search (none without screens)."""
    if not isinstance(problem, Screened):
        return {}, ()
    return problem.screens(seed=seed), tuple(problem.ordering)


def mechanism_of(problem: Problem) -> str | None:
    """The name of the problem's implicit-bias statistic in ``Outcome.extras``, if any."""
    return problem.mechanism if isinstance(problem, Diagnosed) else None


def curves_of(problem: Problem, flagged: list[int], *, seed: int) -> dict[str, list[float]]:
    """The problem's report curves (none for a problem that draws none)."""
    return problem.kernels(flagged, seed=seed) if isinstance(problem, Curved) else {}


def placed_on(problem: Problem, device: str) -> Problem:
    """``problem`` on ``device``; a problem that cannot move stays as it is."""
    return problem.on_device(device) if isinstance(problem, Placeable) else problem


@dataclass(frozen=True)
class AuditProblem:
    """Everything a worker needs to run trials: data, student, optimizer, device.

    ``x_val``/``y_val`` may be None: the outcome's error is then the effective rank of A,
    the label-free signature of the poisoned implicit bias (high rank does not extrapolate).
    """

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    spec: SSMSpec
    train: TrainConfig
    device: str = "cpu"
    dtype: str = "float64"
    # Screens whose scores order the search, combined by each example's highest rank, so
    # an example any of them finds suspicious is removed early: gamma0 (the paper's
    # mechanism: a push on all entries of A together, through the input at position k-1),
    # trace_push (the same push through every position, as each example's share per
    # checkpoint) and loss trajectories (mechanism-agnostic; it also ranks harmless outliers
    # early, which the search then puts back). Measured on the benchmarks: gamma0 is blind to
    # poisons placed off position k-1 (all its scores tie at 0, and a tie ranks lowest),
    # trace_push and loss trajectories are not (AUROC of the combined order 0.88-0.98 with
    # the poisons at k-2, against 0.79-0.90 without trace_push); gradient similarity to the
    # trusted set flips sign between placements and only reports. The isolation forest reads
    # the inputs alone, so it sees unusual energy wherever it sits: with the poisons' energy
    # on the last position, which no push on A reads (gamma0 ties at 0, trace_push ranks
    # them last: AUROC 0.5 and 0.0), it ranked them with AUROC 0.89-0.93, and the audits
    # that had flagged nothing (n = 107 and 288, harm 6.1x and 6.5x) flagged all 7 and 24,
    # and nothing on their clean twins. Harmless outliers come early with it too (the
    # decoys), which costs the tests trials, not recall.
    ordering: tuple[str, ...] = ("gamma0", "trace_push", "loss_trajectory", "isolation_forest")
    # the paper's mechanism: poisons raise the effective rank of A (all its entries together)
    mechanism: str | None = "effective_rank"
    # the scalars the data were divided by (:func:`auditor.models.data_scales`); curves for
    # the report are given back in the data's own units
    x_scale: float = 1.0
    y_scale: float = 1.0

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def metric(self) -> str:
        return "trusted-set relative error" if self.x_val is not None else "effective rank of A (no reference set)"

    @property
    def horizon(self) -> int:
        """How far the learned kernels are read: the reference length, else 4 x the training length."""
        return int(self.x_val.shape[1]) if self.x_val is not None else 4 * int(self.x.shape[1])

    def run(self, trials: list[Trial]) -> list[Outcome]:
        """Train every trial's model in one batched :func:`train_many` call; outcomes in order."""
        return _run_ssm(self, trials)

    def screens(self, *, seed: int) -> dict[str, np.ndarray]:
        from auditor.screens import run_screens

        return run_screens(spec=self.spec, x=self.x, y=self.y, x_val=self.x_val, y_val=self.y_val,
                           config=self.train, seed=seed, device=self.device)

    def kernels(self, flagged: list[int], *, seed: int) -> dict[str, list[float]]:
        """Impulse responses of models trained with all data and without the flagged set."""
        masks = with_and_without(self.n, flagged)
        result = train_many(self.spec, self.x, self.y, masks, [seed] * len(masks), self.train,
                            dtype=getattr(torch, self.dtype), device=self.device)
        return curves_by_name(impulse_response(result.params, self.horizon) * (self.y_scale / self.x_scale))

    def on_device(self, device: str) -> "AuditProblem":
        return self if device == self.device else replace(self, device=device)


def with_and_without(n: int, flagged: list[int]) -> np.ndarray:
    """Masks (1 or 2, n) for :meth:`Problem.kernels`: all the data, then all but ``flagged``
    (only when something is flagged)."""
    masks = np.ones((2 if flagged else 1, n))
    masks[1:, list(flagged)] = 0
    return masks


def curves_by_name(rows) -> dict[str, list[float]]:
    """The rows of :func:`with_and_without`'s models as ``with_all`` / ``without_flagged``."""
    return dict(zip(("with_all", "without_flagged"), (row.tolist() for row in rows)))


def run_trials(problem: Problem, trials: list[Trial]) -> list[Outcome]:
    """Run ``trials`` of any problem; outcomes in the trials' order."""
    return problem.run(trials) if trials else []


def _run_ssm(problem: AuditProblem, trials: list[Trial]) -> list[Outcome]:
    if not trials:
        return []
    masks = np.stack([np.asarray(t.mask, bool) for t in trials]).astype(np.float64)
    result = train_many(problem.spec, problem.x, problem.y, masks, [t.seed for t in trials],
                        problem.train, dtype=getattr(torch, problem.dtype), device=problem.device)
    rank = effective_rank(result.params["a"])
    # the kernel read to the reference length, but no further than 2 d coefficients (a d x d
    # Hankel matrix already has the rank of a d-state system: Kronecker's theorem), 128 at least
    hankel = hankel_effective_rank(impulse_response(result.params, min(problem.horizon,
                                                                        2 * max(problem.spec.state_dim, 64))))
    if problem.x_val is not None:
        error = reference_relative_error(result.params, problem.x_val, problem.y_val)
    else:
        error = rank
    error = torch.nan_to_num(error, nan=float("inf"))
    return [Outcome(key=t.key, error=float(error[m]), train_loss=float(result.loss[m]),
                    converged=bool(result.converged[m]), steps=int(result.steps[m]),
                    extras={"effective_rank": float(rank[m]), "hankel_effective_rank": float(hankel[m])})
            for m, t in enumerate(trials)]
