"""Printing results for people (rich tables) and for scripts (JSON)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table


def print_json(obj) -> None:
    """One JSON document on stdout."""
    json.dump(obj, sys.stdout, indent=2, default=float)
    sys.stdout.write("\n")


def print_reproduction(result: dict) -> None:
    """The clean vs poisoned errors per seed, the means, and the published means."""
    table = Table(title=f"{result['setting']} setting, L={result['length']}, d={result['state_dim']} "
                        f"({result['metric']})")
    table.add_column("seed", justify="right")
    table.add_column("clean", justify="right")
    table.add_column("poisoned", justify="right")
    marks = zip(result.get("clean_converged", [True] * len(result["seeds"])),
                result.get("poisoned_converged", [True] * len(result["seeds"])))
    for seed, clean, poisoned, (ok_c, ok_p) in zip(result["seeds"], result["clean_errors"],
                                                   result["poisoned_errors"], marks):
        table.add_row(str(seed), f"{clean:.4g}" + ("" if ok_c else " (not converged)"),
                      f"{poisoned:.4g}" + ("" if ok_p else " (not converged)"))
    table.add_section()
    table.add_row("mean (converged)", f"{result['clean_error']:.4g}", f"{result['poisoned_error']:.4g}", style="bold")
    table.add_row("paper", f"{result['paper']['clean']:.4g}", f"{result['paper']['poisoned']:.4g}")
    console = Console()
    console.print(table)
    ratio = result["poisoned_error"] / result["clean_error"] if result["clean_error"] else float("inf")
    paper = result["paper"]["poisoned"] / result["paper"]["clean"]
    console.print(f"poisoned / clean: {ratio:.3g} (paper {paper:.3g}); "
                  f"{result['seconds']:.1f} s")


def fmt(value) -> str:
    """A fraction with two decimals, or ``n/a``."""
    return "n/a" if value is None else f"{value:.2f}"


def print_report(report: dict, *, json_path=None, html_path=None) -> None:
    """An audit's verdict in a few lines on stdout, and where the report files were written."""
    print(report.get("status_line", ""))
    if report.get("flagged"):
        print(f"flagged: {report['flagged']}")
    evaluation = report.get("evaluation")
    if evaluation:
        print(f"against ground truth: precision {fmt(evaluation.get('precision'))}, "
              f"recall {fmt(evaluation.get('recall'))}, AUROC {fmt(evaluation.get('auroc'))}")
    for label, target in (("JSON report", json_path), ("HTML report", html_path)):
        if target:
            print(f"{label}: {target}")


def audit_line(audit: dict) -> str:
    """One line on a server audit: id, status, progress, trials, stage or error."""
    line = f"audit {audit['id']}: {audit['status']}, {audit['progress']:.0%}, {audit['trials_done']} trials"
    if audit.get("stage") and audit["status"] == "running":
        line += f" ({audit['stage']})"
    if audit.get("error"):
        line += f": {audit['error']}"
    return line


def scan_line(scan: dict) -> str:
    """One line on a scan: id, status, audits per status, examples flagged."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(scan["counts"].items()) if v)
    return (f"scan {scan['id']}: {scan['status']}, {len(scan['audits'])} audits ({counts}), "
            f"{scan['flagged_total']} examples flagged")


def print_scan_report(report: dict) -> None:
    """A scan's summary report: one line per audit, then the totals."""
    for row in report["audits"]:
        flagged = "" if row["flagged"] is None else f", {row['flagged']} flagged"
        detail = row.get("status_line") or row.get("error") or ""
        print(f"  {row['filename']}: audit {row['audit_id']} {row['status']}{flagged}" + (f": {detail}" if detail
                                                                                          else ""))
    totals = report["totals"]
    print(f"scan {report['id']}: {report['status']}, {totals['audits']} audits, {totals['succeeded']} succeeded, "
          f"{totals['failed']} failed, {totals['canceled']} canceled, {totals['flagged_audits']} with flags, "
          f"{totals['flagged']} examples flagged")
