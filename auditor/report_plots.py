"""The report's plots, drawn with matplotlib (Agg canvas, no pyplot state) as PNG bytes.

Every function takes plain JSON types (parts of the report of :mod:`auditor.report`) and
returns the PNG; the page embeds them as ``data:`` images.
"""

from __future__ import annotations

import functools
import io

import numpy as np

DPI = 110
FLAGGED, APART, TYPICAL, TRUTH = "#c0392b", "#e67e22", "#34495e", "#1f3a93"
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9}


def _figure(width: float = 8.4, height: float = 3.2):
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


def _styled(plot):
    """Draw ``plot`` under the report's font sizes (a local rc context: no global state)."""
    @functools.wraps(plot)
    def draw(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)
    return draw


def finite_scores(scores) -> np.ndarray:
    """Scores as floats, non-finite ones (None) set below the lowest finite score."""
    values = np.array([np.nan if s is None else s for s in scores], dtype=float)
    finite = np.isfinite(values)
    floor = values[finite].min() - 1.0 if finite.any() else 0.0
    return np.where(finite, values, floor)


@_styled
def plot_scores(scores: list, *, flagged: list[int], apart: list[int], poisons: list[int] | None) -> bytes:
    """Each example's harm score; flagged in red, harm without the mechanism in orange."""
    fig = _figure()
    ax = fig.add_subplot()
    values = np.array([np.nan if s is None else s for s in scores], float)
    index = np.arange(len(values))
    colors = np.full(len(values), "#95a5a6", dtype=object)
    colors[np.asarray(apart, int)] = APART
    colors[np.asarray(flagged, int)] = FLAGGED
    ax.vlines(index, 0, np.nan_to_num(values), colors=list(colors), linewidth=1.0 if len(values) > 200 else 1.6)
    for chosen, color, label in ((flagged, FLAGGED, "flagged"), (apart, APART, "harm without the mechanism")):
        if chosen:
            ax.scatter(chosen, values[chosen], color=color, s=16, zorder=3, label=label)
    if poisons:
        ax.scatter(poisons, values[poisons], facecolors="none", edgecolors=TRUTH, s=50, linewidths=1.2,
                   zorder=4, label="poison (ground truth)")
    ax.axhline(0, color="#444", linewidth=0.6)
    ax.set_xlabel("example index")
    ax.set_ylabel("harm score (higher = more harmful)")
    ax.set_xlim(-1, len(values))
    if flagged or apart or poisons:
        ax.legend(loc="best")
    return _png(fig)


@_styled
def plot_sequences(profile: dict, records: list[dict]) -> bytes:
    """The singled-out sequences over positions against the median and 10-90% band of the
    others; one panel per channel."""
    median = np.asarray(profile["median"], float)
    lo, hi = np.asarray(profile["q10"], float), np.asarray(profile["q90"], float)
    if median.ndim == 1:
        median, lo, hi = median[:, None], lo[:, None], hi[:, None]
    length, channels = median.shape
    shown = min(channels, 6)
    fig = _figure(8.4, 2.9 * shown + 0.3)
    positions = np.arange(1, length + 1)
    many = len(records) > 12
    for c in range(shown):
        ax = fig.add_subplot(shown, 1, c + 1)
        ax.fill_between(positions, lo[:, c], hi[:, c], color=TYPICAL, alpha=0.18, linewidth=0,
                        label=f"10-90% of the {profile['examples']} others")
        ax.plot(positions, median[:, c], color=TYPICAL, linewidth=2.2, label="median of the others")
        for n_drawn, rec in enumerate(records):
            values = np.asarray(rec["sequence"], float)
            values = values if values.ndim == 1 else values[:, c]
            flagged = rec["role"] == "flagged"
            label = None
            if not many:
                label = f"#{rec['index']}" + ("" if flagged else " (no mechanism)")
            elif n_drawn == 0 or rec["role"] != records[n_drawn - 1]["role"]:
                label = "flagged" if flagged else rec["role"].replace("_", " ")
            ax.plot(positions, values, color=FLAGGED if flagged else APART, linestyle="-" if flagged else "--",
                    linewidth=1.0 if many else 1.5, alpha=0.55 if many else 0.9, marker=None if many else ".",
                    label=label)
        ax.set_xlabel("position in the sequence (1 = first)")
        ax.set_ylabel("value" if channels == 1 else f"channel {c + 1}")
        ax.set_xlim(0.5, length + 0.5)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 if len(records) <= 14 else 2,
                  fontsize=8, frameon=False)
    return _png(fig)


@_styled
def plot_evidence(records: list[dict]) -> bytes:
    """Each tested example's harm factor per seed and its rise of the effective rank of A."""
    rows = [r for r in records if r.get("harm_ratio")]
    has_rank = any(r.get("rank_rise") for r in rows)
    fig = _figure(8.4, max(2.6, 0.32 * len(rows) + 1.4))
    axes = [fig.add_subplot(1, 2 if has_rank else 1, k + 1) for k in range(2 if has_rank else 1)]
    y = np.arange(len(rows))[::-1]
    for row, pos in zip(rows, y):
        color = FLAGGED if row["role"] == "flagged" else APART
        axes[0].scatter(row["harm_ratio"], [pos] * len(row["harm_ratio"]), color=color, s=18, zorder=3)
        if row.get("control_ratio"):
            axes[0].plot([1, max(row["control_ratio"])], [pos, pos], color="#95a5a6", linewidth=3, alpha=0.6)
        if has_rank and row.get("rank_rise"):
            axes[1].scatter(row["rank_rise"], [pos] * len(row["rank_rise"]), color=color, s=18, zorder=3)
            axes[1].plot([0, max(row.get("rank_band") or [0.1])], [pos, pos], color="#95a5a6", linewidth=3, alpha=0.6)
    labels = [f"#{r['index']}" for r in rows]
    axes[0].set_xscale("log")
    axes[0].axvline(1, color="#444", linewidth=0.6)
    axes[0].set_xlabel("harm: error with it / reference (per seed)")
    for ax in axes:
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.7, len(rows) - 0.3)
    if has_rank:
        axes[1].axvline(0, color="#444", linewidth=0.6)
        axes[1].set_xlabel("rise of the effective rank of A (per seed)")
    return _png(fig)


@_styled
def plot_kernels(kernels: dict, *, train_length: int | None) -> bytes:
    """kappa_j of a model trained with all data and one without the flagged set."""
    fig = _figure(8.4, 3.0)
    ax = fig.add_subplot()
    styles = {"with_all": (FLAGGED, "trained on all data"),
              "without_flagged": ("#27ae60", "trained without the flagged")}
    positive = True
    for name, kappa in kernels.items():
        values = np.array([np.nan if v is None else v for v in kappa], float)
        positive &= bool(np.all(values[np.isfinite(values)] > 0))
        color, label = styles.get(name, (None, name.replace("_", " ")))
        ax.plot(np.arange(1, len(values) + 1), values, marker=".", markersize=4, color=color, label=label)
    if positive:
        ax.set_yscale("log")
    if train_length:
        ax.axvline(train_length + 0.5, color="#888", linestyle=":", linewidth=1)
        ax.text(train_length + 0.7, 0.96, "beyond the training length", transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="#555")
    ax.set_xlabel("j (lag + 1)")
    ax.set_ylabel("kappa_j")
    ax.legend()
    return _png(fig)


@_styled
def plot_generalization(gen: dict, groups: list[str]) -> bytes:
    """Per-seed errors and their geometric mean with its 95% interval, per group of models."""
    fig = _figure(6.4, 3.2)
    ax = fig.add_subplot()
    colors = {"with_all": FLAGGED, "without_flagged": "#27ae60", "without_random": "#7f8c8d"}
    for i, name in enumerate(groups):
        g = gen[name]
        mean, ci = g.get("geomean"), g.get("ci95")
        if mean is None or mean <= 0:
            continue
        err = None
        if ci and None not in ci:
            err = [[max(mean - ci[0], 0.0)], [max(ci[1] - mean, 0.0)]]
        ax.errorbar([i], [mean], yerr=err, fmt="o", capsize=6, color=colors.get(name), markersize=7)
        errors = [e for e in g.get("errors", []) if e is not None and e > 0]
        ax.scatter(np.full(len(errors), i) + np.linspace(-0.12, 0.12, len(errors)), errors, s=14,
                   color=colors.get(name), alpha=0.45)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel(gen.get("metric", "error"))
    return _png(fig)


@_styled
def plot_roc(report: dict) -> bytes:
    """ROC curves of the detector and of every screen against ground truth."""
    from sklearn.metrics import roc_curve

    ev = report["evaluation"]
    truth = np.zeros(len(report["scores"]), bool)
    truth[np.asarray(ev["poisons"], int)] = True
    fig = _figure(5.6, 4.6)
    ax = fig.add_subplot()
    curves = [(name, report["screens"][name], b.get("auroc"), {"linewidth": 1.1})
              for name, b in ev.get("baselines", {}).items() if name in report.get("screens", {})]
    curves.append(("detector", report["scores"], ev.get("auroc"), {"linewidth": 2.4, "color": "black"}))
    for name, scores, auroc, style in curves:                       # the detector last, on top
        fpr, tpr, _ = roc_curve(truth, finite_scores(scores))
        ax.plot(fpr, tpr, label=f"{name} ({'n/a' if auroc is None else f'{auroc:.2f}'})", **style)
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle="--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
