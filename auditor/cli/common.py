"""What every command group shares: exit codes, errors, and each flag declared once.

Nothing here imports the service stack, pydantic or torch at module level.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CLEAN = 0          # the run ended and nothing was flagged (or the command did its job)
EXIT_FLAGGED = 1        # the run ended and examples were flagged
EXIT_USAGE = 2          # bad input or usage: unknown flag, unreadable file, unknown id, no API key
EXIT_FAILED = 3         # the run failed: training failed, server error, audit failed or canceled
EXIT_INTERRUPTED = 130  # Ctrl-C

# the values of auditor.config.Strategy and of AuditConfig.mode, the built-in models of auditor.models and the default of
# confirm_seeds, spelled out so that building the parser imports neither pydantic nor the registry
# (tests/auditor/test_cli.py holds them equal)
STRATEGY_CHOICES = ("auto", "group", "core", "loo", "banzhaf")
MODEL_CHOICES = ("ssm", "network", "s4d")
MODE_CHOICES = ("blind", "forensics")
CONFIRM_SEEDS = 8
MODEL_HELP = ("the student every trial trains: ssm (the standalone SSM, setting B; the default), network (the "
              "SSM followed by a ReLU MLP, setting C), s4d (the deep S4D classifier, which classification sets "
              "get unless another model is named), an installed package's entry point (group auditor.models), "
              "or module:attr naming a TorchModel or a factory seed -> torch.nn.Module (docs/models.md); a "
              "server takes registered names only")
SERVER_EXTRA = "pip install 'auditor[server]'"
SERVER_MODULES = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "ray", "pydantic_settings",
                  "prometheus_client", "multipart", "python_multipart", "jinja2", "api", "workers", "store"}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2 (``code`` overrides it)."""

    def __init__(self, message: str, *, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


class RunFailed(CLIError):
    """The run failed (training, server, or a failed or canceled audit): exit status 3."""

    def __init__(self, message: str):
        super().__init__(message, code=EXIT_FAILED)


def flagged_code(flagged) -> int:
    """Exit status of a run that ended: 1 if it flagged examples, else 0."""
    return EXIT_FLAGGED if flagged else EXIT_CLEAN


def report_code(report: dict) -> int:
    """Exit status of an audit that ended with ``report``: 3 if its models did not fit their
    data (verdict ``not_fitted``: the run failed to say anything), else :func:`flagged_code`."""
    if report.get("verdict") == "not_fitted":
        return EXIT_FAILED
    return flagged_code(report.get("flagged"))


# --- flag groups ------------------------------------------------------------------------------

def add_audit_flags(p: argparse.ArgumentParser, *, local: bool = False) -> None:
    """The audit's configuration (``auditor.config.AuditConfig``); ``local`` adds --device."""
    add_strategy_flag(p)
    p.add_argument("--budget", type=int, default=None, help="most models to train in the search")
    p.add_argument("--model", metavar="NAME", default="ssm", help=MODEL_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the search (default 0)")
    p.add_argument("--confirm-seeds", type=int, default=CONFIRM_SEEDS,
                   help=f"fresh seeds of the confirmation round (default {CONFIRM_SEEDS})")
    p.add_argument("--mode", choices=MODE_CHOICES, default="blind",
                   help="blind (default): score models on the trusted reference set x_val, y_val; forensics: on "
                        "the known attacked example x_target, y_target (find the poisons behind it)")
    if local:
        add_device_flag(p)


def add_strategy_flag(p: argparse.ArgumentParser, extra_help: str = "") -> None:
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto",
                   help="search strategy (default auto: core tests on regression sets of n >= 144, else group)"
                        + extra_help)


def add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device to train on (default cpu; e.g. cuda)")


def add_json_flag(p: argparse.ArgumentParser, help: str = "print the result as JSON on stdout") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_report_outputs(p: argparse.ArgumentParser) -> None:
    """--json, --out and --html of the commands that produce a report."""
    add_json_flag(p, "print the report as JSON on stdout")
    p.add_argument("--out", metavar="FILE", help="write the JSON report here")
    p.add_argument("--html", metavar="FILE", help="write the HTML report here")


def add_wait_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true",
                   help=f"follow the {what} with a progress bar (on stderr) until it ends")


def add_client_flags(p: argparse.ArgumentParser) -> None:
    """Where the server is and the key to use."""
    p.add_argument("--server", metavar="URL",
                   help="API base URL (default: $AUDITOR_SERVER, else http://127.0.0.1:8000)")
    p.add_argument("--api-key", metavar="KEY", help="API key (default: $AUDITOR_API_KEY)")


def add_database_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--database-url", metavar="URL",
                   help="SQLAlchemy URL (default: $AUDITOR_DATABASE_URL, else SQLite in ./auditor-data)")


def add_ray_address_flag(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--ray-address", metavar="ADDR", help=help)


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """The dispatcher's flags, shared by ``serve`` and ``worker``."""
    add_database_flag(p)
    add_ray_address_flag(p, "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: "
                            "$AUDITOR_RAY_ADDRESS, else start a local one)")
    p.add_argument("--max-running-audits", type=int, metavar="K", help="audits run at once (default 2)")
    p.add_argument("--retrainers", type=int, metavar="R",
                   help="retrainer actors (default: one per GPU, else one per CPU)")
    p.add_argument("--retrainer-gpus", type=float, metavar="G", help="GPUs per retrainer actor (default 0: CPU actors)")
    p.add_argument("--heartbeat-seconds", type=float, metavar="S",
                   help="how often a running audit reports alive (default 2)")
    p.add_argument("--stale-after-seconds", type=float, metavar="S",
                   help="requeue running audits whose worker was silent this long (default 30)")


def add_log_file_flag(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--log-file", metavar="PATH", help=f"where the logs go ('-': stderr; default: {default_help})")


# --- helpers ------------------------------------------------------------------------------------

def audit_config(**fields):
    """An :class:`auditor.config.AuditConfig`, or one line saying which field is wrong."""
    import pydantic

    from auditor.config import AuditConfig

    try:
        return AuditConfig(**fields)
    except pydantic.ValidationError as exc:
        raise CLIError(invalid(exc)) from None


def audit_settings(args: argparse.Namespace) -> dict:
    """The audit flags as the JSON config a server takes (defaults left out)."""
    config = audit_config(strategy=args.strategy, budget=args.budget, seed=args.seed,
                          confirm_seeds=args.confirm_seeds, model=args.model, mode=args.mode)
    return config.model_dump(mode="json", exclude_defaults=True)


def invalid(exc) -> str:
    """A pydantic validation error as one line: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


@contextmanager
def server_stack(command: str) -> Iterator[None]:
    """Around a service command's imports: a missing server dependency is one line, exit 2."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in SERVER_MODULES:
            raise
        raise CLIError(f"`auditor {command}` needs the server dependencies ({top} is not installed): "
                       f"{SERVER_EXTRA}") from None
