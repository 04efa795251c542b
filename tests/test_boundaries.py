"""The science core and the command line run without the service stack."""

import subprocess
import sys
from pathlib import Path

SCIENCE = ["auditor.data", "auditor.config", "auditor.ssm", "auditor.train", "auditor.metrics",
           "auditor.paper", "auditor.bench", "auditor.benchmarks", "auditor.screens", "auditor.trials",
           "auditor.search.plan", "auditor.executors", "auditor.engine"]
FORBIDDEN = ["ray", "sqlalchemy", "fastapi", "starlette", "alembic", "uvicorn"]
# the command line also stays clear of the service packages until a service command runs
CLI_FORBIDDEN = [*FORBIDDEN, "api", "workers", "store"]
CLI = sorted(f"auditor.cli.{p.stem}" for p in (Path(__file__).parents[1] / "auditor" / "cli").glob("*.py")
             if p.stem != "__main__")


def _loaded_after(code: str, forbidden: list[str]) -> list[str]:
    """The forbidden top-level packages in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = (f"import sys\n{code}\n"
             f"bad = sorted({{m.split('.')[0] for m in sys.modules if m.split('.')[0] in {forbidden!r}}})\n"
             "sys.stderr.write('LOADED:' + ','.join(bad) + '\\n')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stderr.rsplit("LOADED:", 1)[1].strip().split(",") if m]


def test_science_modules_import_no_service_stack():
    assert _loaded_after(f"for m in {SCIENCE!r}: __import__(m)", FORBIDDEN) == []


def test_cli_modules_and_help_import_no_service_stack():
    assert len(CLI) >= 8 and "auditor.cli.main" in CLI
    assert _loaded_after(f"for m in {CLI!r}: __import__(m)\nimport auditor.cli\nauditor.cli.build_parser()",
                         CLI_FORBIDDEN) == []
    help_run = ("from auditor.cli import main\n"
                "for argv in (['--help'], ['serve', '--help'], ['scan', 'submit', '--help'], ['keys', 'revoke', "
                "'--help']):\n    main(argv)")
    assert _loaded_after(help_run, CLI_FORBIDDEN) == []


def test_service_commands_without_the_server_stack_say_what_to_install(tmp_path):
    block = "import sys\nfor m in ('sqlalchemy', 'fastapi', 'ray', 'uvicorn'): sys.modules[m] = None\n"
    for argv in (["serve", "--data-dir", str(tmp_path)], ["worker"], ["keys", "create", "--tenant", "t"],
                 ["keys", "revoke", "0123456789abcdef"]):
        code = block + f"from auditor.cli import main\nsys.exit(main({argv!r}))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 2, (argv, out.stderr)
        assert out.stderr.count("\n") == 1 and "pip install 'auditor[server]'" in out.stderr, (argv, out.stderr)


def test_client_commands_need_no_server_stack(tmp_path):
    block = "import sys\nfor m in ('sqlalchemy', 'fastapi', 'ray', 'uvicorn'): sys.modules[m] = None\n"
    code = block + ("from auditor.cli import main\n"
                    "sys.exit(main(['status', '0' * 32, '--server', 'http://127.0.0.1:9', '--api-key', 'aud_x_y']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "cannot reach" in out.stderr and "pip install" not in out.stderr
