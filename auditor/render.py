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
