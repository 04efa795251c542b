"""The audit report: a JSON-safe dict (the CLI/API contract) and a self-contained HTML page.

:func:`build_report` turns an :class:`~auditor.engine.AuditResult` into plain JSON types:

``flagged``         sorted example indices judged harmful
``scores``          n floats, higher = more harmful (None where not finite)
``trials``          models trained
``unconverged``     of those, the models that stopped at ``max_steps`` before their training
                    loss reached the fitting threshold
``verdict``         ``flagged``, ``nothing_flagged``, or ``not_fitted``: most models stopped
                    at ``max_steps`` before fitting (:func:`auditor.engine.fit_status`), so the
                    audit says neither that the set is clean nor that its flags hold
``fit``             ``trials``, ``unconverged``, ``share_unconverged``, ``fitted``
``generalization``  ``with_all`` / ``without_flagged`` / ``without_random`` error summaries
                    (``geomean``, ``ci95``, ``errors``, ``extras``: the mean of each of the
                    model's diagnostics, e.g. ``effective_rank``) and ``metric``
``confirmation``    ``confirmed``, ``p_value``, ``effect_log_ratio``, ``effect_ci95``,
                    ``error_ratio``, ``p_value_vs_random``, ``error_ratio_vs_random`` (against
                    removing a random set of the same size), ``rank_drop``, ``rank_drop_ci95``,
                    ``p_value_rank`` (how much removing the set lowers the models' effective
                    rank), ``harm_confirmed`` (the error tests passed), ``rank_checked``
                    (whether the verdict also required the rank to drop),
                    ``seeds``, and ``tested`` (the set removed in the round)
``evaluation``      only with ground truth: ``precision``, ``recall``, ``auroc``, the
                    detector's ``precision_at_k``/``recall_at_k``, ``poisons`` and
                    ``baselines`` (each screen's ``auroc``, ``precision_at_k``, ``recall_at_k``)
``evidence``        one record per example the verdict singles out (flagged, and apart:
                    ``without_mechanism``, ``unconfirmed``): the test that decided it, its
                    harm per seed with an interval, the rise of the effective rank of A, its
                    sequence (see :func:`auditor.evidence.build_evidence`); ``evidence_note``
                    says why the tests' numbers are missing where they are (else None)
``sequence_profile`` the other examples' median and 10%/90% quantiles at every position
                    (``median``, ``q10``, ``q90``: (k,) or (k, channels)) and their count
``strategy``, ``budget``, ``details``, ``screens``, ``kernels``, ``seconds``,
``reproduce``, ``status_line``

Every report is validated against :class:`auditor.report_schema.Report`, from which its
JSON schema (``auditor report-schema``) is generated.

:func:`render_html` renders the report into one HTML page (a jinja2 template with
autoescaping, :mod:`auditor.report_html`): inline CSS and base64 PNG plots, no external
resources, no scripts.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from auditor.engine import AuditResult
from auditor.config import AuditConfig
from auditor.data import Dataset
from auditor.report_schema import Report

CONFIRMATION_KEYS = ("confirmed", "p_value", "effect_log_ratio", "effect_ci95", "error_ratio",
                     "p_value_vs_random", "error_ratio_vs_random", "rank_drop", "rank_drop_ci95",
                     "p_value_rank", "diagnostics", "harm_confirmed", "rank_checked", "seeds")
GENERALIZATION_GROUPS = ("with_all", "without_flagged", "without_random")
SUMMARY_KEYS = ("geomean", "ci95", "errors", "extras")


# --------------------------------------------------------------------------- JSON safety


def json_safe(obj):
    """``obj`` in plain JSON types: numpy scalars/arrays unwrapped, non-finite floats None.

    Parameters
    ----------
    obj : any
        Nested dicts, lists, tuples, numpy arrays and scalars, str, bool, None.

    Returns
    -------
    The same structure of dict (str keys), list, float, int, str, bool and None.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return [json_safe(v) for v in items]
    if hasattr(obj, "item"):                                           # torch / 0-d scalars
        return json_safe(obj.item())
    return str(obj)


# --------------------------------------------------------------------------- metrics


def detection_metrics(*, flagged: Sequence[int], is_poison: np.ndarray) -> dict:
    """Precision and recall of a flagged set against ground truth.

    Parameters
    ----------
    flagged : indices judged harmful
    is_poison : bool array (n,)

    Returns
    -------
    dict with ``precision`` (TP / |flagged|, None if nothing is flagged), ``recall``
    (TP / #poisons, None if there are no poisons), ``true_positives``, ``n_flagged``,
    ``n_poisons``.
    """
    truth = np.asarray(is_poison, bool)
    chosen = np.unique(np.asarray(list(flagged), dtype=int))
    tp = int(truth[chosen].sum()) if chosen.size else 0
    poisons = int(truth.sum())
    return {"precision": tp / chosen.size if chosen.size else None,
            "recall": tp / poisons if poisons else None,
            "true_positives": tp, "n_flagged": int(chosen.size), "n_poisons": poisons}


def ranking_metrics(*, scores: Sequence[float], is_poison: np.ndarray) -> dict:
    """AUROC and precision/recall of the top k scores, k = number of poisons.

    Non-finite scores rank lowest. Ties at the k-th score are broken by index (stable).

    Returns
    -------
    dict with ``auroc`` (None with a single class), ``precision_at_k`` and ``recall_at_k``
    (None without poisons), and ``k``.
    """
    truth = np.asarray(is_poison, bool)
    values = _finite_scores(scores)
    k = int(truth.sum())
    if k == 0:
        return {"auroc": None, "precision_at_k": None, "recall_at_k": None, "k": 0}
    top = np.argsort(-values, kind="stable")[:k]
    hits = int(truth[top].sum())
    return {"auroc": _auroc(truth, values), "precision_at_k": hits / k, "recall_at_k": hits / k, "k": k}


def _finite_scores(scores) -> np.ndarray:
    values = np.array([np.nan if s is None else s for s in scores], dtype=float)
    finite = np.isfinite(values)
    floor = values[finite].min() - 1.0 if finite.any() else 0.0
    return np.where(finite, values, floor)


def _auroc(truth: np.ndarray, values: np.ndarray) -> float | None:
    if truth.all() or not truth.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, values))


# --------------------------------------------------------------------------- the report


def build_report(result: AuditResult, dataset: Dataset, config: AuditConfig) -> dict:
    """The audit report as plain JSON types (see the module docstring for the fields).

    Parameters
    ----------
    result : AuditResult
    dataset : Dataset
        The audited data; only its summary, hash and ground truth (if any) are read.
    config : AuditConfig

    Returns
    -------
    dict, serializable with ``json.dumps(..., allow_nan=False)``.
    """
    verdict, fit = result.verdict, result.fit
    report = {
        "flagged": sorted(int(i) for i in verdict.flagged),
        "scores": json_safe(np.asarray(verdict.scores, float)),
        "trials": fit["trials"],
        "unconverged": fit["unconverged"],
        "verdict": verdict_name(fit, flagged=verdict.flagged),
        "fit": json_safe(fit),
        "generalization": _generalization(verdict.confirmation, metric=result.metric),
        "confirmation": _confirmation(verdict.confirmation, flagged=verdict.flagged, details=verdict.details),
        "strategy": result.strategy,
        "mode": config.mode,
        "budget": int(result.budget),
        "details": json_safe(verdict.details),
        "screens": {name: json_safe(np.asarray(v, float)) for name, v in result.screens.items()},
        "kernels": json_safe(result.kernels),
        "seconds": json_safe(result.seconds),
        "reproduce": _reproduce(dataset, config),
    }
    report.update(_evidence(result, dataset, config))
    if dataset.is_poison is not None:
        report["evaluation"] = _evaluation(result, dataset.is_poison)
    report["status_line"] = status_line(report, n=dataset.n)
    Report.model_validate(report)                         # the types say what a report holds
    return report


def _evidence(result: AuditResult, dataset: Dataset, config: AuditConfig) -> dict:
    from auditor.evidence import build_evidence

    evidence = build_evidence(result, dataset, config)
    records = json_safe(evidence["records"])
    singled = {r["index"] for r in records}
    return {"evidence": records, "evidence_note": evidence["note"],
            "sequence_profile": sequence_profile(dataset.x, exclude=singled)}


def sequence_profile(x: np.ndarray, *, exclude) -> dict:
    """The typical sequence of the examples not in ``exclude``: per position (and channel)
    the median and the 10% and 90% quantiles, and how many examples they summarize."""
    keep = np.ones(len(x), bool)
    keep[np.asarray(sorted(exclude), dtype=int)] = False
    rows = np.asarray(x, float)[keep] if keep.any() else np.asarray(x, float)
    q10, median, q90 = np.quantile(rows, [0.1, 0.5, 0.9], axis=0)
    return json_safe({"examples": int(len(rows)), "median": median, "q10": q10, "q90": q90})


def _generalization(confirmation: dict, *, metric: str) -> dict:
    groups = confirmation.get("generalization", {})
    out = {name: json_safe({k: groups[name][k] for k in SUMMARY_KEYS if k in groups[name]})
           for name in GENERALIZATION_GROUPS if name in groups}
    out["metric"] = metric
    return out


def _confirmation(confirmation: dict, *, flagged: Sequence[int], details: dict) -> dict:
    out = json_safe({k: confirmation[k] for k in CONFIRMATION_KEYS if k in confirmation})
    out.setdefault("confirmed", False)
    # the set the round removed: the flagged set, or the candidates it failed to confirm
    out["tested"] = sorted(int(i) for i in (flagged or details.get("unconfirmed", [])))
    return out


def _evaluation(result: AuditResult, is_poison: np.ndarray) -> dict:
    truth = np.asarray(is_poison, bool)
    scores = np.asarray(result.verdict.scores, float)
    detected = detection_metrics(flagged=result.verdict.flagged, is_poison=truth)
    ranked = ranking_metrics(scores=scores, is_poison=truth)
    out = {**detected, "auroc": ranked["auroc"], "precision_at_k": ranked["precision_at_k"],
           "recall_at_k": ranked["recall_at_k"], "k": ranked["k"],
           "poisons": [int(i) for i in np.flatnonzero(truth)],
           "baselines": {name: {k: v for k, v in ranking_metrics(scores=s, is_poison=truth).items() if k != "k"}
                         for name, s in result.screens.items()}}
    return json_safe(out)


def _reproduce(dataset: Dataset, config: AuditConfig) -> dict:
    return json_safe({"dataset_sha256": dataset.sha256 or None, "dataset": dataset.summary(),
                      "config": config.model_dump(mode="json"), "versions": _versions(),
                      "device": _device(config.device), "platform": platform.platform()})


def _versions() -> dict:
    import auditor

    versions = {"auditor": getattr(auditor, "__version__", None), "numpy": np.__version__,
                "python": platform.python_version()}
    torch = sys.modules.get("torch")
    versions["torch"] = getattr(torch, "__version__", None) if torch else _dist_version("torch")
    # the search's statistics (scipy) and the outlier baseline (scikit-learn) shape the report too
    versions.update({name: _dist_version(name) for name in ("scipy", "scikit-learn")})
    return versions


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _device(device: str) -> str:
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        try:
            return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except (RuntimeError, AssertionError):
            return device
    return device


def verdict_name(fit: dict, *, flagged) -> str:
    """``not_fitted`` when most models did not fit, else ``flagged`` or ``nothing_flagged``."""
    if not fit["fitted"]:
        return "not_fitted"
    return "flagged" if flagged else "nothing_flagged"


def status_line(report: dict, *, n: int) -> str:
    """One sentence for people: what was flagged, how much it matters, how sure it is.

    Parameters
    ----------
    report : dict, as built by :func:`build_report` (without ``status_line``)
    n : int, training examples
    """
    conf = report["confirmation"]
    metric = report["generalization"].get("metric", "error")
    flagged, tested = report["flagged"], conf.get("tested", [])
    if report.get("verdict") == "not_fitted":
        fit = report["fit"]
        text = (f"Training did not fit: {fit['unconverged']} of {fit['trials']} models stopped at max_steps before "
                "their training loss reached the fitting threshold, so their errors say nothing about harm and the "
                f"audit cannot call these {n} examples clean" + (f" nor confirm the {len(flagged)} it flagged"
                                                                 if flagged else "")
                + " (raise max_steps, or check that the student can fit this data)")
        evaluation = report.get("evaluation")
        if evaluation:
            text += (f"; against ground truth ({evaluation['n_poisons']} poisons): precision "
                     f"{_num(evaluation['precision'])}, recall {_num(evaluation['recall'])}")
        return text + "."
    if flagged:
        text = (f"{len(flagged)} of {n} examples flagged; removing them lowers the {metric} "
                f"{_ratio_text(conf)}, p = {_num(conf.get('p_value'))}")
    elif tested and conf.get("harm_confirmed"):                  # harm, but not through the implicit bias
        text = (f"No poisons confirmed: removing {len(tested)} candidate(s) lowers the {metric} "
                f"{_ratio_text(conf)}, p = {_num(conf.get('p_value'))}, but not the effective rank of A "
                f"(change {_num(conf.get('rank_drop'))}, p = {_num(conf.get('p_value_rank'))}): harm without the "
                "poisons' mechanism (examples of the set's own distribution that the model fits less well)")
    elif tested:
        text = (f"No harmful examples confirmed: removing {len(tested)} candidate(s) changed the {metric} "
                f"{_ratio_text(conf)}, p = {_num(conf.get('p_value'))} (against removing a random set of the "
                f"same size: p = {_num(conf.get('p_value_vs_random'))}) over {len(conf.get('seeds', []))} seeds, "
                "not significant")
    elif isinstance(without := report.get("details", {}).get("without_mechanism"), list) and without:
        text = (f"No poisons found among {n} examples: the search found {len(without)} whose presence raises "
                f"the {metric}, but none of them raises the effective rank of A (the poisons' mechanism); they "
                "are listed in details.without_mechanism")
    else:
        reason = report.get("details", {}).get("reason")
        text = f"No harmful examples found among {n} examples" + (f" ({reason})" if reason else "")
    short = report.get("details", {}).get("budget")
    if short:                                          # the search stopped short of its plan
        text += f"; the search budget of {report.get('budget')} models was {short}; a larger budget may flag more"
    text += f"; {report['trials']} models trained"
    if report.get("unconverged"):                      # their errors are not the fitted models'
        text += (f", {report['unconverged']} of them stopped at max_steps before fitting their training set "
                 "(a larger max_steps may change the verdict)")
    evaluation = report.get("evaluation")
    if evaluation:
        text += (f"; against ground truth ({evaluation['n_poisons']} poisons): precision "
                 f"{_num(evaluation['precision'])}, recall {_num(evaluation['recall'])}")
    return text + "."


def _ratio_text(conf: dict) -> str:
    ratio = conf.get("error_ratio")
    ci = conf.get("effect_ci95")
    text = f"{_num(ratio)}x"
    if ci and None not in ci:
        text += f" (95% CI {_num(math.exp(min(ci[0], 700)))}x to {_num(math.exp(min(ci[1], 700)))}x)"
    return text


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def write_report(report: dict, *, json_path: str | Path | None = None, html_path: str | Path | None = None) -> None:
    """Write the report as JSON (indent 2) and/or as a self-contained HTML page.

    Parameters
    ----------
    report : dict, as built by :func:`build_report`
    json_path, html_path : path, optional
    """
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if html_path is not None:
        Path(html_path).write_text(render_html(report), encoding="utf-8")


def render_html(report: dict) -> str:
    """A self-contained HTML page for ``report`` (see :func:`auditor.report_html.render_html`)."""
    from auditor.report_html import render_html as render

    return render(report)
