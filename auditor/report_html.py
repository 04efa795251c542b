"""The HTML page of an audit report: a jinja2 template with autoescaping.

:func:`render_html` turns the JSON report of :mod:`auditor.report` into one self-contained
page: inline CSS, plots as ``data:`` PNG images, no script and no external resource (it is
served under ``Content-Security-Policy: default-src 'none'; img-src data:; style-src
'unsafe-inline'``). Every value of the report reaches the page through the template's
autoescaping; the page's structure lives in ``auditor/templates/report.html.j2``.
"""

from __future__ import annotations

import base64
import json
import math
from functools import cache

from auditor import report_plots as plots

GENERALIZATION_GROUPS = ("with_all", "without_flagged", "without_random")
TEST_NAMES = {"core_alone": "core test", "core_mechanism": "core test, mechanism", "core_weaker": "weaker candidate",
              "group_mechanism": "group step 2", "group_settled": "group step 2", "group_joint": "group steps 3-4",
              "loo_outlier": "leave-one-out"}
LIST_LIMIT = 40


@cache
def environment():
    """The jinja2 environment: the package's templates, autoescaping on, undefined is an error."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("auditor", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, ratio=ratio, interval=interval, seeds=per_seed, test_name=test_name)
    return env


def render_html(report: dict) -> str:
    """The page for ``report`` (a dict as built by :func:`auditor.report.build_report`).

    Returns
    -------
    str, an HTML5 document.
    """
    return environment().get_template("report.html.j2").render(**page(report))


# --------------------------------------------------------------------------- number formats


def num(value, digits: int = 3) -> str:
    """A number for people: ``digits`` significant digits; ints and strings as they are."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, int, str)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def ratio(value, digits: int = 3) -> str:
    """A factor, as ``2.5x``."""
    return "n/a" if value is None else f"{num(value, digits)}x"


def interval(values, digits: int = 3, *, factor: bool = False) -> str:
    """``[lo, hi]``, or n/a."""
    if not values or None in values:
        return "n/a"
    unit = "x" if factor else ""
    return f"[{num(values[0], digits)}{unit}, {num(values[1], digits)}{unit}]"


def per_seed(values, digits: int = 3, *, factor: bool = False, signed: bool = False) -> str:
    """Per-seed values, comma-separated."""
    if not values:
        return "n/a"
    unit = "x" if factor else ""
    return ", ".join(("+" if signed and v is not None and v > 0 else "") + num(v, digits) + unit for v in values)


# --------------------------------------------------------------------------- the page's data


def page(report: dict) -> dict:
    """Everything the template shows, computed from ``report``."""
    evidence = report.get("evidence") or []
    flagged = [r for r in evidence if r.get("role") == "flagged"]
    apart = [r for r in evidence if r.get("role") != "flagged"]
    ev = report.get("evaluation")
    dataset = (report.get("reproduce") or {}).get("dataset") or {}
    return {
        "report": report,
        "status": report.get("status_line", ""),
        "summary": _summary(report, dataset),
        "confirmation": _confirmation_rows(report),
        "generalization": _generalization(report),
        "flagged_records": flagged,
        "apart_records": apart,
        "flagged_tests": _tests(flagged),
        "apart_tests": _tests(apart),
        "bases": sorted({r["base"] for r in evidence if r.get("base")}),
        "apart_labels": sorted({r["role"] for r in apart}),
        "evidence_note": report.get("evidence_note"),
        "evidence_plot": _img(plots.plot_evidence(evidence)) if any(r.get("harm_ratio") for r in evidence) else None,
        "sequence_plot": _sequence_plot(report, evidence),
        "has_truth": ev is not None,
        "has_rank": any(r.get("rank_rise") for r in evidence),
        "has_threshold": any(r.get("threshold_ratio") for r in evidence),
        "has_second": any(r.get("second_core_ratio") is not None for r in evidence),
        "scores_plot": _scores_plot(report, flagged, apart),
        "kernels_plot": _kernels_plot(report, dataset),
        "evaluation": _evaluation(report),
        "details": _details(report.get("details") or {}),
        "reproduce": _reproduce(report),
        "metric": (report.get("generalization") or {}).get("metric", "error"),
    }


def _tests(records: list[dict]) -> list[tuple[str, str]]:
    """The distinct tests that decided ``records``: (short name, the test in words)."""
    seen = {}
    for r in records:
        if r.get("decided_by"):
            seen.setdefault(r["decided_by"], test_name(r))
    return [(name, text) for text, name in seen.items()]


def test_name(record: dict) -> str:
    """The short name of the test that decided ``record``."""
    return TEST_NAMES.get(record.get("test"), record.get("test") or "n/a")


def _img(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _short_list(values: list) -> str:
    if not values:
        return "none"
    text = ", ".join(str(v) for v in values[:LIST_LIMIT])
    return text + (f", ... ({len(values)} in all)" if len(values) > LIST_LIMIT else "")


def _summary(report: dict, dataset: dict) -> list[tuple[str, str]]:
    conf = report.get("confirmation") or {}
    apart = (report.get("details") or {}).get("without_mechanism") or []
    rows = [("examples audited", num(dataset.get("n"))), ("sequence length", num(dataset.get("length"))),
            ("channels", num(dataset.get("channels"))), ("trusted reference set", num(dataset.get("n_val"))),
            ("flagged", f"{len(report.get('flagged', []))}: {_short_list(report.get('flagged', []))}"),
            ("harm without the poisons' mechanism", f"{len(apart)}: {_short_list(apart)}"),
            ("verdict confirmed", "yes" if conf.get("confirmed") else "no"),
            ("strategy", num(report.get("strategy"))), ("search budget (models)", num(report.get("budget"))),
            ("models trained", num(report.get("trials"))),
            ("models stopped at max_steps before fitting", num(report.get("unconverged"))),
            ("verdict", {"not_fitted": "training did not fit: no verdict", "flagged": "examples flagged",
                         "nothing_flagged": "nothing flagged"}.get(report.get("verdict"), "n/a")),
            ("measure of generalization", (report.get("generalization") or {}).get("metric", "n/a")),
            ("seconds", num(report.get("seconds")))]
    return rows


def _confirmation_rows(report: dict) -> list[tuple[str, str, str]]:
    conf = report.get("confirmation") or {}
    if not conf.get("tested"):
        return []
    effect = conf.get("effect_ci95")
    effect_ci = None if not effect or None in effect else [math.exp(min(v, 700)) for v in effect]
    rows = [("examples removed", str(len(conf["tested"])), "the flagged set (or the candidates the round did not "
             "confirm)"),
            ("error ratio, all / without them", f"{ratio(conf.get('error_ratio'))} {interval(effect_ci, factor=True)}",
             "geometric mean over the seeds, 95% interval (sign-flip test inverted)"),
            ("p-value (lowers the error by more than 20%)", num(conf.get("p_value")), "one-sided paired sign-flip test"),
            ("error ratio, random removal / without them", ratio(conf.get("error_ratio_vs_random")),
             "removing as many random examples instead"),
            ("p-value against the random removal", num(conf.get("p_value_vs_random")), "one-sided paired sign-flip test")]
    if conf.get("rank_checked"):
        rows += [("drop of the effective rank of A", f"{num(conf.get('rank_drop'))} "
                  f"{interval(conf.get('rank_drop_ci95'))}", "all minus without them, mean over the seeds, 95% "
                  "interval"),
                 ("p-value of the rank drop (more than 0.1)", num(conf.get("p_value_rank")), "one-sided paired sign-flip test")]
    for name, drop in sorted((conf.get("diagnostics") or {}).items()):
        if name != "effective_rank":                       # (the mechanism's own rows are above)
            rows.append((f"drop of {name.replace('_', ' ')}", f"{num(drop.get('drop'))} {interval(drop.get('ci95'))} "
                         f"p = {num(drop.get('p_value'))}", "evidence, not a decision: all minus without them, "
                         "95% interval, one-sided sign-flip p-value of no drop"))
    rows += [("harm confirmed", "yes" if conf.get("harm_confirmed") else "no", "both error tests passed"),
             ("verdict confirmed", "yes" if conf.get("confirmed") else "no",
              "harm confirmed" + (" and the rank drop significant" if conf.get("rank_checked") else "")),
             ("seeds", ", ".join(str(s) for s in conf.get("seeds", [])), "fresh seeds, unused by the search")]
    return rows


def _generalization(report: dict) -> dict | None:
    gen = report.get("generalization") or {}
    groups = [g for g in GENERALIZATION_GROUPS if g in gen]
    if not groups:
        return None
    names = {"with_all": "all data", "without_flagged": "without the removed set",
             "without_random": "without as many random examples"}
    extras = sorted({name for g in groups for name in gen[g].get("extras") or {}})
    rows = [(names[g], num(gen[g].get("geomean")), interval(gen[g].get("ci95")),
             [num((gen[g].get("extras") or {}).get(name)) for name in extras], per_seed(gen[g].get("errors")))
            for g in groups]
    return {"rows": rows, "extras": [name.replace("_", " ") for name in extras],
            "plot": _img(plots.plot_generalization(gen, groups))}


def _sequence_plot(report: dict, evidence: list[dict]) -> str | None:
    profile = report.get("sequence_profile")
    records = [r for r in evidence if r.get("sequence") is not None]
    if not profile or not records:
        return None
    return _img(plots.plot_sequences(profile, records))


def _scores_plot(report: dict, flagged: list[dict], apart: list[dict]) -> str | None:
    scores = report.get("scores") or []
    if not scores:
        return None
    poisons = (report.get("evaluation") or {}).get("poisons")
    apart_idx = [r["index"] for r in apart] or list((report.get("details") or {}).get("without_mechanism") or [])
    return _img(plots.plot_scores(scores, flagged=report.get("flagged", []), apart=apart_idx, poisons=poisons))


def _kernels_plot(report: dict, dataset: dict) -> str | None:
    kernels = report.get("kernels") or {}
    if not kernels:
        return None
    return _img(plots.plot_kernels(kernels, train_length=dataset.get("length")))


def _evaluation(report: dict) -> dict | None:
    ev = report.get("evaluation")
    if not ev:
        return None
    rows = [("detector (the flagged set)", num(ev.get("auroc")), num(ev.get("precision_at_k")),
             num(ev.get("recall_at_k")), num(ev.get("precision")), num(ev.get("recall")))]
    rows += [(f"screen: {name}", num(b.get("auroc")), num(b.get("precision_at_k")), num(b.get("recall_at_k")),
              "", "") for name, b in (ev.get("baselines") or {}).items()]
    roc = _img(plots.plot_roc(report)) if ev.get("auroc") is not None else None
    return {"ev": ev, "rows": rows, "roc": roc}


def _details(details: dict) -> dict:
    simple = [(k, v if isinstance(v, str) else num(v)) for k, v in details.items()
              if v is None or isinstance(v, (str, int, float, bool))]
    nested = {k: v for k, v in details.items() if k not in dict(simple)}
    return {"simple": simple, "nested": json.dumps(nested, indent=2) if nested else ""}


def _reproduce(report: dict) -> dict:
    rep = report.get("reproduce") or {}
    rows = [("dataset sha256", rep.get("dataset_sha256") or "n/a"),
            ("confirmation seeds", ", ".join(str(s) for s in (report.get("confirmation") or {}).get("seeds", []))
             or "n/a"),
            ("device", num(rep.get("device"))), ("platform", num(rep.get("platform")))]
    rows += [(f"{name} version", num(v)) for name, v in (rep.get("versions") or {}).items()]
    return {"rows": rows, "config": json.dumps(rep.get("config") or {}, indent=2),
            "dataset": json.dumps(rep.get("dataset") or {}, indent=2)}
