"""The library entry point: ``auditor.audit(x, y, ...) -> AuditReport``.

It takes NumPy arrays, torch tensors or pandas objects (or the path of an ``.npz``, CSV or
Parquet data set, or a pandas DataFrame in the column convention of docs/data.md), validates
them as :mod:`auditor.data` validates a file, runs :func:`auditor.engine.run_audit` in this
process and wraps the report of :func:`auditor.report.build_report`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.engine import AuditResult, run_audit
from auditor.config import AuditConfig
from auditor.data import Dataset, DatasetError, load_dataset, validate_arrays
from auditor.executors import InlineExecutor
from auditor.models import as_builder, is_import_path
from auditor.report import build_report, write_report


@dataclass(frozen=True)
class AuditReport:
    """The outcome of :func:`audit`.

    Attributes
    ----------
    report : dict
        The report as plain JSON types (:func:`auditor.report.build_report`).
    result : AuditResult
        Everything the audit produced (verdict, outcomes, screens).
    config : AuditConfig
    """

    report: dict
    result: AuditResult
    config: AuditConfig

    @property
    def flagged(self) -> list[int]:
        """Indices of the training examples flagged as poisons (sorted)."""
        return list(self.report["flagged"])

    @property
    def scores(self) -> np.ndarray:
        """Per-example harm scores (n,), higher = more harmful."""
        return np.array([np.nan if s is None else s for s in self.report["scores"]], float)

    @property
    def evaluation(self) -> dict | None:
        """Precision, recall, AUROC and baselines when the data came with ``is_poison``."""
        return self.report.get("evaluation")

    @property
    def status_line(self) -> str:
        return self.report["status_line"]

    @property
    def trials(self) -> int:
        return int(self.report["trials"])

    def to_dict(self) -> dict:
        """The report as plain JSON types (a copy)."""
        import copy

        return copy.deepcopy(self.report)

    def save_html(self, path: str | Path) -> Path:
        """Write the self-contained HTML report; return its path."""
        write_report(self.report, html_path=path)
        return Path(path)

    def save_json(self, path: str | Path) -> Path:
        """Write the report as JSON; return its path."""
        write_report(self.report, json_path=path)
        return Path(path)


def audit(x, y=None, *, x_val=None, y_val=None, is_poison=None, model: Any = "auto",
          executor=None, progress=None, **config) -> AuditReport:
    """Audit a training set for clean-label poisons.

    Parameters
    ----------
    x : array-like (n, k) or (n, k, channels), a path, or a pandas DataFrame
        NumPy arrays, torch tensors and pandas objects are accepted. A path names an
        ``.npz``, CSV or Parquet data set (docs/data.md); a DataFrame given without ``y``
        is read in the same column convention (``x_0``..., ``y``, ``split``, ``is_poison``).
        With a path or such a DataFrame, ``y``, ``x_val``, ``y_val`` and ``is_poison`` come
        from it and must not be given.
    y : array-like (n,) or (n, outputs) float targets, or (n,) integer class labels
    x_val, y_val : array-like, optional
        The trusted reference set (the outcome of every trial is measured there).
    is_poison : bool array (n,), optional
        Ground truth, for benchmarks: the report then has an ``evaluation``.
    model : "auto", a registered name, "module:attr", or a model object
        "auto": the default student (``ssm`` for regression, ``s4d`` for classification).
        A name goes to ``AuditConfig.model``. An object (a :class:`auditor.TorchModel`, a
        callable ``seed -> torch.nn.Module`` or any object with ``problem(dataset,
        config)``) is trained directly; its import path, when it has one, is recorded in
        the report's config.
    executor : optional
        A callable ``problem -> Executor`` (default: in-process training).
    progress : callable (done, total, phase), optional
    **config
        Fields of :class:`auditor.config.AuditConfig` (strategy, budget, seed, ...).

    Returns
    -------
    AuditReport
    """
    dataset = _dataset(x, y, x_val=x_val, y_val=y_val, is_poison=is_poison)
    if isinstance(model, str):
        cfg = AuditConfig(**config) if model == "auto" else AuditConfig(model=model, **config)
        problem = None
    else:
        if "model" in config:
            raise TypeError("give the model once, as model=")
        cfg = AuditConfig(**config)
        problem = as_builder(model).problem(dataset, cfg)
        cfg = cfg.model_copy(update={"model": _import_name(model)})
    if problem is None:
        from auditor.engine import build_problem

        problem = build_problem(dataset, cfg)
    runner = executor(problem) if executor is not None else InlineExecutor(problem)
    try:
        result = run_audit(dataset, cfg, executor=runner, progress=progress)
    finally:
        runner.close()
    return AuditReport(report=build_report(result, dataset, cfg), result=result, config=cfg)


def _dataset(x, y, *, x_val, y_val, is_poison) -> Dataset:
    if isinstance(x, (str, os.PathLike)):
        if any(v is not None for v in (y, x_val, y_val, is_poison)):
            raise TypeError("with a path, the arrays come from the file: give no y, x_val, y_val or is_poison")
        return load_dataset(x)
    if y is None and hasattr(x, "columns") and hasattr(x, "to_numpy"):     # a DataFrame in the column convention
        if any(v is not None for v in (x_val, y_val, is_poison)):
            raise TypeError("with a DataFrame in the column convention, give no x_val, y_val or is_poison")
        from auditor.tables import frame_arrays

        return validate_arrays(frame_arrays(x, fmt="DataFrame"))
    if y is None:
        raise TypeError("audit(x, y): y is missing")
    arrays = {"x": _array(x), "y": _array(y)}
    for name, value in (("x_val", x_val), ("y_val", y_val), ("is_poison", is_poison)):
        if value is not None:
            arrays[name] = _array(value)
    return validate_arrays(arrays)


def _array(value) -> np.ndarray:
    """A NumPy array from a NumPy array, a torch tensor, a pandas object or a sequence."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):          # torch.Tensor
        return value.detach().cpu().numpy()
    if hasattr(value, "to_numpy"):                                   # pandas Series / DataFrame
        return np.asarray(value.to_numpy())
    if isinstance(value, (str, bytes)):
        raise DatasetError("expected an array, got a string")
    return np.asarray(value)


def _import_name(obj) -> str:
    """``module:qualname`` of a model object (of a TorchModel's factory), or a description."""
    target = getattr(obj, "factory", obj)
    name = f"{getattr(target, '__module__', '')}:{getattr(target, '__qualname__', '')}"
    if is_import_path(name):
        return name if target is obj else f"TorchModel({name})"
    return f"<{type(obj).__name__} without an import path>"
