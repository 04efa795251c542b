"""The audit report: a JSON-safe dict (the CLI/API contract) and a self-contained HTML page.

:func:`build_report` turns an :class:`~auditor.audit.AuditResult` into plain JSON types:

``flagged``         sorted example indices judged harmful
``scores``          n floats, higher = more harmful (None where not finite)
``trials``          models trained
``unconverged``     of those, the models that stopped at ``max_steps`` before their training
                    loss reached the fitting threshold
``generalization``  ``with_all`` / ``without_flagged`` / ``without_random`` error summaries
                    (``geomean``, ``ci95``, ``errors``, ``effective_rank``) and ``metric``
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
``strategy``, ``budget``, ``details``, ``screens``, ``kernels``, ``seconds``,
``reproduce``, ``status_line``

:func:`render_html` draws the report with matplotlib (Agg canvas, no pyplot state) into one
HTML page with inline CSS and base64 PNGs: no external URLs, no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from auditor.audit import AuditResult
from auditor.config import AuditConfig
from auditor.data import Dataset

CONFIRMATION_KEYS = ("confirmed", "p_value", "effect_log_ratio", "effect_ci95", "error_ratio",
                     "p_value_vs_random", "error_ratio_vs_random", "rank_drop", "rank_drop_ci95",
                     "p_value_rank", "harm_confirmed", "rank_checked", "seeds")
GENERALIZATION_GROUPS = ("with_all", "without_flagged", "without_random")
SUMMARY_KEYS = ("geomean", "ci95", "errors", "effective_rank")
DPI = 90


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
    verdict = result.verdict
    report = {
        "flagged": sorted(int(i) for i in verdict.flagged),
        "scores": json_safe(np.asarray(verdict.scores, float)),
        "trials": len(result.outcomes),
        "unconverged": sum(not o.converged for o in result.outcomes.values()),
        "generalization": _generalization(verdict.confirmation, metric=result.metric),
        "confirmation": _confirmation(verdict.confirmation, flagged=verdict.flagged, details=verdict.details),
        "strategy": result.strategy,
        "budget": int(result.budget),
        "details": json_safe(verdict.details),
        "screens": {name: json_safe(np.asarray(v, float)) for name, v in result.screens.items()},
        "kernels": json_safe(result.kernels),
        "seconds": json_safe(result.seconds),
        "reproduce": _reproduce(dataset, config),
    }
    if dataset.is_poison is not None:
        report["evaluation"] = _evaluation(result, dataset.is_poison)
    report["status_line"] = status_line(report, n=dataset.n)
    return report


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


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:980px;
color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}
h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.status{font-size:1.08em;background:#f4f6fa;border-left:4px solid #3465a4;padding:.6em .9em}
.status.flagged{border-left-color:#c0392b}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}img{max-width:100%}
.note{color:#666;font-size:.9em}
"""


def render_html(report: dict) -> str:
    """A self-contained HTML page for ``report``: inline CSS, base64 PNG plots, no scripts.

    Parameters
    ----------
    report : dict, as built by :func:`build_report`

    Returns
    -------
    str, the page.
    """
    sections = [_summary_section(report), _scores_section(report), _kernels_section(report),
                _generalization_section(report), _evaluation_section(report), _details_section(report),
                _reproduce_section(report)]
    body = "\n".join(s for s in sections if s)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Audit report</title>"
            f"<style>{CSS}</style></head><body>\n<h1>Audit report</h1>\n{body}\n</body></html>\n")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: list[Sequence], *, header: Sequence[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    cells = []
    for row in rows:
        cells.append("<tr>" + "".join(_cell(v, first=i == 0 and not header) for i, v in enumerate(row)) + "</tr>")
    return f"<table>{head}{''.join(cells)}</table>"


def _cell(value, *, first: bool) -> str:
    if first:
        return f"<th>{_e(value)}</th>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"<td class=\"num\">{_e(_num(value, 4))}</td>"
    return f"<td>{_e('n/a' if value is None else value)}</td>"


def _img(png: bytes, alt: str) -> str:
    return f"<img src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\" alt=\"{_e(alt)}\">"


def _summary_section(report: dict) -> str:
    conf = report.get("confirmation", {})
    dataset = report.get("reproduce", {}).get("dataset", {})
    rows = [("strategy", report.get("strategy")), ("search budget", report.get("budget")),
            ("models trained", report.get("trials")),
            ("models stopped at max_steps before fitting", report.get("unconverged")), ("examples", dataset.get("n")),
            ("sequence length", dataset.get("length")), ("reference set", dataset.get("n_val")),
            ("metric", report.get("generalization", {}).get("metric")),
            ("flagged", len(report.get("flagged", []))), ("flagged indices", _short_list(report.get("flagged", []))),
            ("confirmed", conf.get("confirmed")), ("error ratio (all / without flagged)", conf.get("error_ratio")),
            ("p-value", conf.get("p_value")), ("seconds", report.get("seconds"))]
    css = "status flagged" if report.get("flagged") else "status"
    return (f"<p class=\"{css}\">{_e(report.get('status_line', ''))}</p>\n<h2>Summary</h2>\n"
            + _table([(k, "n/a" if v is None else v) for k, v in rows]))


def _short_list(values: list, limit: int = 40) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", ... ({len(values)} in all)" if len(values) > limit else "") if values else "none"


def _scores_section(report: dict) -> str:
    scores = report.get("scores") or []
    if not scores:
        return ""
    poisons = (report.get("evaluation") or {}).get("poisons")
    png = _plot_scores(scores, flagged=report.get("flagged", []), poisons=poisons)
    note = "Flagged examples in red" + ("; ground-truth poisons ringed." if poisons is not None else ".")
    return f"<h2>Per-example scores</h2>\n{_img(png, 'per-example harm scores')}\n<p class=\"note\">{_e(note)}</p>"


def _kernels_section(report: dict) -> str:
    kernels = report.get("kernels") or {}
    if not kernels:
        return ""
    png = _plot_kernels(kernels)
    return (f"<h2>Impulse responses</h2>\n{_img(png, 'impulse responses')}\n<p class=\"note\">"
            "kappa_j of a model trained with all data and without the flagged set (same seed); for a deep "
            "classifier, the first layer's mean |K_h[j]| over its channels.</p>")


def _generalization_section(report: dict) -> str:
    gen = report.get("generalization") or {}
    groups = [g for g in GENERALIZATION_GROUPS if g in gen]
    if not groups:
        return ""
    rows = [(g.replace("_", " "), gen[g].get("geomean"), _interval(gen[g].get("ci95")),
             gen[g].get("effective_rank"), ", ".join(_num(e) for e in gen[g].get("errors", []))) for g in groups]
    table = _table(rows, header=("models trained", "geometric mean", "95% interval", "effective rank", "per seed"))
    return (f"<h2>Generalization before and after ({_e(gen.get('metric', ''))})</h2>\n"
            f"{_img(_plot_generalization(gen, groups), 'generalization')}\n{table}")


def _interval(ci) -> str:
    return "n/a" if not ci or None in ci else f"[{_num(ci[0])}, {_num(ci[1])}]"


def _evaluation_section(report: dict) -> str:
    ev = report.get("evaluation")
    if not ev:
        return ""
    rows = [("detector (flagged set)", ev.get("auroc"), ev.get("precision_at_k"), ev.get("recall_at_k"),
             ev.get("precision"), ev.get("recall"))]
    rows += [(f"screen: {name}", b.get("auroc"), b.get("precision_at_k"), b.get("recall_at_k"), None, None)
             for name, b in ev.get("baselines", {}).items()]
    table = _table(rows, header=("detector", "AUROC", f"P@{ev.get('k')}", f"R@{ev.get('k')}",
                                 "precision (flagged)", "recall (flagged)"))
    roc = ""
    if ev.get("auroc") is not None:
        roc = _img(_plot_roc(report), "ROC curves") + "\n"
    return (f"<h2>Against ground truth</h2>\n<p>{_e(ev.get('n_poisons'))} poisons; "
            f"{_e(ev.get('true_positives'))} of {_e(ev.get('n_flagged'))} flagged are poisons.</p>\n{roc}"
            f"<h3>Baselines</h3>\n{table}\n<p class=\"note\">k = number of poisons; screens are one-run "
            "per-example scores and never decide the verdict.</p>")


def _details_section(report: dict) -> str:
    details = report.get("details")
    if not details:
        return ""
    return f"<h2>Search details</h2>\n<pre>{_e(json.dumps(details, indent=2))}</pre>"


def _reproduce_section(report: dict) -> str:
    rep = report.get("reproduce") or {}
    versions = rep.get("versions") or {}
    rows = [("dataset sha256", rep.get("dataset_sha256") or "n/a"),
            ("confirmation seeds", ", ".join(str(s) for s in report.get("confirmation", {}).get("seeds", [])) or "n/a"),
            ("device", rep.get("device")), ("platform", rep.get("platform"))]
    rows += [(f"{name} version", "n/a" if v is None else str(v)) for name, v in versions.items()]
    config = json.dumps(rep.get("config", {}), indent=2)
    return (f"<h2>Reproduce</h2>\n{_table(rows)}\n<h3>Configuration</h3>\n<pre>{_e(config)}</pre>\n"
            f"<h3>Dataset</h3>\n<pre>{_e(json.dumps(rep.get('dataset', {}), indent=2))}</pre>")


# --------------------------------------------------------------------------- plots


def _figure(width: float = 7.5, height: float = 2.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _plot_scores(scores: list, *, flagged: list[int], poisons: list[int] | None) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    values = np.array([np.nan if s is None else s for s in scores], float)
    index = np.arange(len(values))
    colors = np.full(len(values), "#7f8c8d", dtype=object)
    colors[np.asarray(flagged, int)] = "#c0392b"
    ax.vlines(index, 0, np.nan_to_num(values), colors=list(colors), linewidth=1.0 if len(values) > 200 else 1.6)
    if flagged:
        ax.scatter(flagged, values[flagged], color="#c0392b", s=14, zorder=3, label="flagged")
    if poisons:
        ax.scatter(poisons, values[poisons], facecolors="none", edgecolors="#1f3a93", s=46, linewidths=1.2,
                   zorder=4, label="poison (ground truth)")
    ax.axhline(0, color="#444", linewidth=0.6)
    ax.set_xlabel("example index")
    ax.set_ylabel("harm score")
    ax.set_xlim(-1, len(values))
    if flagged or poisons:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _plot_kernels(kernels: dict) -> bytes:
    fig = _figure(6.5, 2.8)
    ax = fig.add_subplot()
    styles = {"with_all": ("#c0392b", "with all data"), "without_flagged": ("#27ae60", "without flagged")}
    positive = True
    for name, kappa in kernels.items():
        values = np.array([np.nan if v is None else v for v in kappa], float)
        positive &= bool(np.all(values[np.isfinite(values)] > 0))
        color, label = styles.get(name, (None, name.replace("_", " ")))
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", markersize=3, color=color, label=label)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("j")
    ax.set_ylabel("kappa_j")
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_generalization(gen: dict, groups: list[str]) -> bytes:
    fig = _figure(5.0, 2.8)
    ax = fig.add_subplot()
    colors = {"with_all": "#c0392b", "without_flagged": "#27ae60", "without_random": "#7f8c8d"}
    for i, name in enumerate(groups):
        g = gen[name]
        mean, ci = g.get("geomean"), g.get("ci95")
        if mean is None or mean <= 0:
            continue
        err = None
        if ci and None not in ci:
            err = [[max(mean - ci[0], 0.0)], [max(ci[1] - mean, 0.0)]]
        ax.errorbar([i], [mean], yerr=err, fmt="o", capsize=5, color=colors.get(name))
        errors = [e for e in g.get("errors", []) if e is not None and e > 0]
        ax.scatter([i] * len(errors), errors, s=10, color=colors.get(name), alpha=0.4)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(gen.get("metric", "error"), fontsize=8)
    return _png(fig)


def _plot_roc(report: dict) -> bytes:
    from sklearn.metrics import roc_curve

    ev = report["evaluation"]
    n = len(report["scores"])
    truth = np.zeros(n, bool)
    truth[np.asarray(ev["poisons"], int)] = True
    fig = _figure(4.6, 4.0)
    ax = fig.add_subplot()
    curves = [(name, report["screens"][name], b.get("auroc"), {"linewidth": 1.0})
              for name, b in ev.get("baselines", {}).items() if name in report.get("screens", {})]
    curves.append(("detector", report["scores"], ev.get("auroc"), {"linewidth": 2.2, "color": "black"}))
    for name, scores, auroc, style in curves:                       # the detector last, on top
        fpr, tpr, _ = roc_curve(truth, _finite_scores(scores))
        ax.plot(fpr, tpr, label=f"{name} ({_num(auroc, 2)})", **style)
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)
