"""The ``auditor`` command line: one module per command group.

``main`` builds the parser and dispatches; ``local`` (demo, audit, clean), ``data``
(make-benchmark, convert), ``paper`` (reproduce, bench), ``client`` (submit, status, report, cancel,
scan) and ``service`` (serve, worker, keys) declare their commands; ``common`` holds the
exit codes and each shared flag, declared once. Handlers import what they need when they
run: importing this package or ``auditor --help`` loads no service stack.
"""

from auditor.cli.common import CONFIRM_SEEDS, MODEL_CHOICES, STRATEGY_CHOICES
from auditor.cli.main import build_parser, main

__all__ = ["CONFIRM_SEEDS", "MODEL_CHOICES", "STRATEGY_CHOICES", "build_parser", "main"]
