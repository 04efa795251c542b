"""The parser, the dispatch to the command groups, and the exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback

from auditor.cli import client, data, local, paper, service
from auditor.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CLIError

DESCRIPTION = "Audit sequence training sets for clean-label poisons aimed at state-space models."
EPILOG = """\
exit status:
  0    the run ended and nothing was flagged (or the command did its job)
  1    the run ended and examples were flagged (audit, submit --wait, status
       --wait, report, scan submit --wait, scan status --wait, scan report;
       demo exits 0 when it ran to the end, since flags are what it shows)
  2    bad input or usage: a bad flag or file, an unknown id, no API key, a server
       that cannot be reached
  3    the run failed: training failed, a server error, an audit failed or was
       canceled (status without --wait: 3 for a failed or canceled audit, else 0)
  130  interrupted

environment: AUDITOR_SERVER, AUDITOR_API_KEY (clients); AUDITOR_DATABASE_URL,
AUDITOR_DATA_DIR, AUDITOR_RAY_ADDRESS and the other AUDITOR_* settings (service).
Results go to stdout; progress bars, notes and errors to stderr.
Run `auditor COMMAND --help` for a command's flags; docs/cli.md has them all.
"""


def version() -> str:
    """The installed package's version (``0+unknown`` from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("auditor")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditor", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"auditor {version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for group in (local, data, paper, client, service):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = client.scan_shorthand(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                     # --help, --version, or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _run(args)


def _run(args) -> int:
    from auditor.data import DatasetError

    try:
        return int(args.handler(args) or 0)
    except CLIError as exc:
        print(f"auditor: error: {exc}", file=sys.stderr)
        return exc.code
    except DatasetError as exc:
        print(f"auditor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:                       # e.g. `auditor ... --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("auditor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:                      # a failure of the run itself (training, a bug): status 3
        traceback.print_exc()
        print(f"auditor: error: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
