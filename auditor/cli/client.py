"""Clients of a running server: ``submit``, ``status``, ``report``, ``cancel`` and ``scan``.

They need only httpx (``api.client`` imports nothing of the service stack). ``status`` and
``report`` given a scan id show the scan.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auditor.cli.common import (
    EXIT_CLEAN,
    EXIT_FAILED,
    CLIError,
    RunFailed,
    add_audit_flags,
    add_client_flags,
    add_json_flag,
    add_report_outputs,
    add_wait_flag,
    audit_settings,
    flagged_code,
    report_code,
)

SCAN_ACTIONS = ("submit", "status", "report", "list")
ENDED_BADLY = ("failed", "canceled")


def add_commands(commands) -> None:
    p = commands.add_parser("submit", help="upload a data set to a running server and queue an audit of it",
                            description="Upload a data set and queue an audit; prints the audit id. With --wait, "
                                        "follow it and print the verdict (exit status 1 if examples are flagged).")
    p.add_argument("file", help="the data set (.npz, .csv or .parquet; see docs/data.md)")
    add_audit_flags(p)
    add_wait_flag(p, "audit")
    add_json_flag(p, "print the audit (or, with --wait, the report) as JSON")
    add_client_flags(p)
    p.set_defaults(handler=run_submit)

    p = commands.add_parser("status", help="an audit's (or a scan's) status and progress on a running server",
                            description="An audit's status and progress (a scan id shows the scan). Exit status 3 "
                                        "for a failed or canceled audit; with --wait, 1 if it flagged examples.")
    p.add_argument("id", metavar="ID", help="an audit id (or a scan id)")
    add_wait_flag(p, "audit")
    add_json_flag(p)
    add_client_flags(p)
    p.set_defaults(handler=run_status)

    p = commands.add_parser("report", help="fetch the report of a finished audit (or a scan) from a running server",
                            description="Fetch a succeeded audit's report (a scan id gives the scan's summary "
                                        "report). Exit status 1 if examples are flagged, 3 if the audit failed.")
    p.add_argument("id", metavar="ID", help="an audit id (or a scan id)")
    add_report_outputs(p)
    add_client_flags(p)
    p.set_defaults(handler=run_report)

    p = commands.add_parser("cancel", help="cancel a queued or running audit on a running server")
    p.add_argument("id", metavar="ID", help="an audit id")
    add_client_flags(p)
    p.set_defaults(handler=run_cancel)

    _add_scan(commands)


def _add_scan(commands) -> None:
    scan = commands.add_parser("scan", help="audit many data sets in one scan: submit, status, report, list",
                               description="Many data sets, one config, one summary. `auditor scan FILE...` is "
                                           "short for `auditor scan submit FILE...`.")
    sub = scan.add_subparsers(title="actions", metavar="ACTION", required=True)
    p = sub.add_parser("submit", help="upload data sets and queue one audit of each under a new scan")
    p.add_argument("files", nargs="+", metavar="FILE", help="data sets (.npz, .csv or .parquet)")
    add_audit_flags(p)
    add_wait_flag(p, "scan")
    add_json_flag(p, "print the scan (with --wait, its report) as JSON")
    add_client_flags(p)
    p.set_defaults(handler=run_scan_submit)

    p = sub.add_parser("status", help="a scan's status, progress and audits")
    p.add_argument("id", metavar="ID", help="a scan id")
    add_wait_flag(p, "scan")
    add_json_flag(p)
    add_client_flags(p)
    p.set_defaults(handler=run_scan_status)

    p = sub.add_parser("report", help="a scan's summary report: each audit's verdict, and totals")
    p.add_argument("id", metavar="ID", help="a scan id")
    add_report_outputs(p)
    add_client_flags(p)
    p.set_defaults(handler=run_scan_report)

    p = sub.add_parser("list", help="the tenant's scans, newest first")
    p.add_argument("--limit", type=int, default=20, help="most scans to list (default 20)")
    add_json_flag(p)
    add_client_flags(p)
    p.set_defaults(handler=run_scan_list)


def scan_shorthand(argv: list[str]) -> list[str]:
    """``scan FILE...`` as ``scan submit FILE...``."""
    if len(argv) >= 2 and argv[0] == "scan" and argv[1] not in (*SCAN_ACTIONS, "-h", "--help"):
        return ["scan", "submit", *argv[1:]]
    return argv


# --- helpers ------------------------------------------------------------------------------------

@contextmanager
def open_client(args) -> Iterator:
    """A :class:`api.client.Client` for ``--server`` and ``--api-key``."""
    from api.client import Client, ClientError

    try:
        client = Client(args.server, args.api_key)
    except ClientError as exc:
        raise CLIError(str(exc)) from None
    with client:
        yield client


def client_call(fn, *args, **kwargs):
    """Call the client; its errors become exit status 2 (refused, unreachable) or 3 (server error)."""
    from api.client import ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        raise _cli_error(exc) from None


def _cli_error(exc) -> CLIError:
    if exc.status is not None and exc.status >= 500:
        return RunFailed(f"server error: {exc}")
    return CLIError(str(exc))


def _found(fn, item_id: str) -> dict | None:
    """``fn(item_id)``, or None if the server answers 404."""
    from api.client import ClientError

    try:
        return fn(item_id)
    except ClientError as exc:
        if exc.status == 404:
            return None
        raise _cli_error(exc) from None


def _audit_or_scan(client, item_id: str) -> tuple[str, dict]:
    """``("audit", audit)`` or, for a scan id, ``("scan", scan)``."""
    audit = _found(client.audit, item_id)
    if audit is not None:
        return "audit", audit
    scan = _found(client.get_scan, item_id)
    if scan is not None:
        return "scan", scan
    raise CLIError(f"audit {item_id!r} not found, nor a scan of that id (HTTP 404)")


def _follow(fetch, label: str, *, quiet: bool, client) -> dict:
    """Poll ``fetch`` with a progress bar on stderr until the audit or scan has ended."""
    from api.client import FINISHED
    from auditor.cli.progress import follow_progress

    with follow_progress(label, disable=quiet) as update:
        return client_call(client.wait, fetch, on_update=update,
                           done=lambda state: state["status"] in (*FINISHED, "finished"))


def _audit_code(audit: dict, report: dict | None) -> int:
    """3 for a failed or canceled audit or one whose models did not fit, else 1 if its report
    flags examples, else 0."""
    if audit["status"] in ENDED_BADLY:
        return EXIT_FAILED
    return report_code(report) if report is not None else EXIT_CLEAN


# --- audits ---------------------------------------------------------------------------------

def run_submit(args) -> int:
    from auditor.render import audit_line, print_json, print_report

    config = audit_settings(args)
    with open_client(args) as client:
        dataset = client_call(client.upload, args.file)
        audit = client_call(client.submit, dataset["id"], config)
        if not args.wait:
            if args.json:
                print_json(audit)
            else:
                print(f"dataset {dataset['id']} ({dataset['n']} sequences); audit queued:", file=sys.stderr)
                print(audit["id"])
            return EXIT_CLEAN
        print(f"audit {audit['id']} queued", file=sys.stderr)
        audit = _follow(lambda: client.audit(audit["id"]), f"audit {audit['id'][:8]}", quiet=args.json,
                        client=client)
        if audit["status"] != "succeeded":
            raise RunFailed(audit_line(audit))
        report = client_call(client.report, audit["id"])
    if args.json:
        print_json(report)
    else:
        print_report(report)
        print(audit["id"])
    return _audit_code(audit, report)


def run_status(args) -> int:
    from auditor.render import audit_line, print_json

    with open_client(args) as client:
        kind, state = _audit_or_scan(client, args.id)
        if kind == "scan":
            return _scan_status(client, state, wait=args.wait, as_json=args.json)
        if args.wait:
            state = _follow(lambda: client.audit(args.id), f"audit {args.id[:8]}", quiet=args.json, client=client)
        report = client_call(client.report, args.id) if args.wait and state["status"] == "succeeded" else None
    if args.json:
        print_json(state)
    else:
        print(audit_line(state))
    return _audit_code(state, report)


def run_report(args) -> int:
    from auditor.render import audit_line, print_json, print_report
    from auditor.report import write_report

    with open_client(args) as client:
        kind, state = _audit_or_scan(client, args.id)
        if kind == "scan":
            return _scan_report(client, state["id"], args)
        if state["status"] in ENDED_BADLY:
            raise RunFailed(audit_line(state))
        if state["status"] != "succeeded":
            raise CLIError(f"audit {args.id} is {state['status']}; its report is ready once it has succeeded "
                           f"(`auditor status {args.id} --wait` follows it)")
        report = client_call(client.report, args.id)
        if args.html:                                   # the page the server rendered
            Path(args.html).write_text(client_call(client.report_html, args.id), encoding="utf-8")
    write_report(report, json_path=args.out)
    if args.json:
        print_json(report)
    else:
        print_report(report, json_path=args.out, html_path=args.html)
    return _audit_code(state, report)


def run_cancel(args) -> int:
    from auditor.render import audit_line

    with open_client(args) as client:
        if _found(client.audit, args.id) is None and _found(client.get_scan, args.id) is not None:
            raise CLIError(f"{args.id} is a scan; cancel its audits one by one (`auditor scan status {args.id}` "
                           "lists them)")
        audit = client_call(client.cancel, args.id)
    print(audit_line(audit) + (" (cancel requested)" if audit["status"] == "running" else ""))
    return EXIT_CLEAN


# --- scans ----------------------------------------------------------------------------------------

def _scan_code(scan_or_totals: dict, *, ended: bool) -> int:
    """3 if an audit failed or was canceled; once ended, 1 if examples were flagged; else 0."""
    counts = scan_or_totals.get("counts", scan_or_totals)
    if any(counts.get(s) for s in ENDED_BADLY):
        return EXIT_FAILED
    flagged = scan_or_totals.get("flagged_total", scan_or_totals.get("flagged"))
    return flagged_code(flagged) if ended else EXIT_CLEAN


def run_scan_submit(args) -> int:
    from auditor.render import print_json

    config = audit_settings(args)
    with open_client(args) as client:
        ids = [client_call(client.upload, path)["id"] for path in args.files]
        scan = client_call(client.scan, ids, config)
        if not args.wait:
            if args.json:
                print_json(scan)
            else:
                for path, audit in zip(args.files, scan["audits"]):
                    print(f"  {path}: audit {audit['id']} {audit['status']}", file=sys.stderr)
                print(f"scan of {len(scan['audits'])} audits queued:", file=sys.stderr)
                print(scan["id"])
            return EXIT_CLEAN
        print(f"scan {scan['id']} queued", file=sys.stderr)
        _follow(lambda: client.get_scan(scan["id"]), f"scan {scan['id'][:8]}", quiet=args.json, client=client)
        return _print_scan_report(client_call(client.scan_report, scan["id"]), as_json=args.json)


def run_scan_status(args) -> int:
    with open_client(args) as client:
        return _scan_status(client, client_call(client.get_scan, args.id), wait=args.wait, as_json=args.json)


def _scan_status(client, scan: dict, *, wait: bool, as_json: bool) -> int:
    from auditor.render import print_json, scan_line

    if wait:
        scan = _follow(lambda: client.get_scan(scan["id"]), f"scan {scan['id'][:8]}", quiet=as_json, client=client)
    if as_json:
        print_json(scan)
    else:
        print(scan_line(scan))
        for audit in scan["audits"]:
            flagged = "" if audit["flagged"] is None else f", {audit['flagged']} flagged"
            print(f"  audit {audit['id']} (dataset {audit['dataset_id'][:8]}): {audit['status']}, "
                  f"{audit['progress']:.0%}{flagged}")
    return _scan_code(scan, ended=wait and scan["status"] == "finished")


def run_scan_report(args) -> int:
    with open_client(args) as client:
        return _scan_report(client, args.id, args)


def _scan_report(client, scan_id: str, args) -> int:
    import json

    report = client_call(client.scan_report, scan_id)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.html:
        Path(args.html).write_text(client_call(client.scan_report_html, scan_id), encoding="utf-8")
    code = _print_scan_report(report, as_json=args.json)
    if not args.json:
        for label, target in (("JSON report", args.out), ("HTML report", args.html)):
            if target:
                print(f"{label}: {target}")
    return code


def _print_scan_report(report: dict, *, as_json: bool) -> int:
    from auditor.render import print_json, print_scan_report

    if as_json:
        print_json(report)
    else:
        print_scan_report(report)
    if report["status"] != "finished":
        print(f"scan {report['id']} is {report['status']}: the totals are partial", file=sys.stderr)
    return _scan_code(report["totals"], ended=report["status"] == "finished")


def run_scan_list(args) -> int:
    from auditor.render import print_json, scan_line

    if args.limit < 1:
        raise CLIError("--limit must be at least 1")
    scans, cursor = [], None
    with open_client(args) as client:
        while len(scans) < args.limit:
            page = client_call(client.list_scans, limit=min(200, args.limit - len(scans)), cursor=cursor)
            scans += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    if args.json:
        print_json(scans)
    else:
        for scan in scans:
            print(f"{scan['created_at'][:19]}  {scan_line(scan)}")
    return EXIT_CLEAN
