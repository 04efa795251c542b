"""Scans: one request, many datasets, one config; a summary over their audits, and a
summary report (JSON, or HTML rendered by a jinja2 template with autoescape)."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse

from api.deps import CurrentPrincipal, CursorQuery, IdPath, LimitQuery, SessionDep, SettingsDep
from api.errors import responses
from api.routers import PREFIX
from api.routers.audits import check_config, quota, wants_html
from api.schemas import ScanAudit, ScanCreate, ScanOut, ScanPage, ScanReport, ScanReportAudit, ScanTotals
from store import repository
from store.models import FINISHED, QUEUED, STATUSES, SUCCEEDED, Audit, Scan, is_id

router = APIRouter(prefix=f"{PREFIX}/scans", tags=["scans"])


def scan_status(audits: list[Audit]) -> str:
    """``finished`` once every audit has ended, ``queued`` while none has started, else ``running``."""
    if all(a.status in FINISHED for a in audits):
        return "finished"
    if all(a.status == QUEUED for a in audits):
        return "queued"
    return "running"


def status_counts(audits: list[Audit]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for audit in audits:
        counts[audit.status] += 1
    return counts


def scan_out(session, scan: Scan, audits: list[Audit]) -> ScanOut:
    """The summary of a scan over its audits."""
    flagged = repository.flagged_counts(session, [a.id for a in audits])
    counts = status_counts(audits)
    status = scan_status(audits)
    progress = sum(1.0 if a.status in FINISHED else a.progress for a in audits) / max(len(audits), 1)
    return ScanOut(id=scan.id, status=status, progress=min(progress, 1.0), counts=counts,
                   flagged_total=sum(flagged.values()), config=scan.config, created_at=scan.created_at,
                   audits=[ScanAudit(id=a.id, dataset_id=a.dataset_id, status=a.status, progress=a.progress,
                                     flagged=flagged.get(a.id)) for a in audits])


@router.post("", status_code=202, operation_id="create_scan", response_model=ScanOut,
             responses=responses(400, 401, 404, 413, 422, 429))
def create_scan(body: ScanCreate, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep,
                response: Response) -> ScanOut:
    """Queue one audit per dataset, all with the same config; all or nothing.

    The config and the quotas are checked as for one audit (422, 429), over every audit
    of the scan.
    """
    dataset_ids = list(dict.fromkeys(body.dataset_ids))
    unknown = [d for d in dataset_ids if not is_id(d)]
    if unknown:
        raise HTTPException(404, f"dataset(s) not found: {', '.join(unknown)}")
    found = {d.id: d for d in repository.get_datasets(session, principal.tenant_id, dataset_ids)}
    missing = [d for d in dataset_ids if d not in found]
    if missing:
        raise HTTPException(404, f"dataset(s) not found: {', '.join(missing)}")
    check_config(body.config, settings, [found[d] for d in dataset_ids])
    scan, audits = repository.create_scan(session, tenant_id=principal.tenant_id, dataset_ids=dataset_ids,
                                          config=body.config.model_dump(mode="json"), quota=quota(settings))
    response.headers["Location"] = f"{router.prefix}/{scan.id}"
    return scan_out(session, scan, audits)


@router.get("", operation_id="list_scans", response_model=ScanPage, responses=responses(400, 401, 422))
def list_scans(principal: CurrentPrincipal, session: SessionDep, limit: LimitQuery = 50,
               cursor: CursorQuery = None) -> ScanPage:
    """The tenant's scans, newest first, one page at a time, each with its summary."""
    page = repository.list_scans(session, principal.tenant_id, limit=limit, cursor=cursor)
    return ScanPage(items=[scan_out(session, s, repository.scan_audits(session, s.id)) for s in page.items],
                    next_cursor=page.next_cursor)


@router.get("/{scan_id}", operation_id="get_scan", response_model=ScanOut, responses=responses(401, 404, 422))
def get_scan(scan_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> ScanOut:
    """A scan's summary: overall status and progress, counts per status, flagged examples per audit."""
    scan = scan_or_404(session, principal.tenant_id, scan_id)
    return scan_out(session, scan, repository.scan_audits(session, scan.id))


@router.get("/{scan_id}/report", operation_id="get_scan_report", response_model=ScanReport,
            responses={200: {"description": "The scan's summary report, as JSON (default) or HTML",
                             "content": {"text/html": {"schema": {"type": "string"}}}},
                       **responses(401, 404, 422)})
def get_scan_report(scan_id: IdPath, principal: CurrentPrincipal, session: SessionDep, request: Request,
                    format: Annotated[Literal["json", "html"] | None,
                                      Query(description="overrides the Accept header")] = None) -> Response:
    """A scan's summary report at any time: per audit its dataset's filename, status, flagged
    count and the verdict's status line; totals. JSON, or HTML with ``?format=html`` or
    ``Accept: text/html``."""
    scan = scan_or_404(session, principal.tenant_id, scan_id)
    report = scan_report(session, principal.tenant_id, scan)
    if wants_html(format, request.headers.get("accept", "")):
        return HTMLResponse(_template().render(report=report.model_dump()))
    return Response(report.model_dump_json(), media_type="application/json")


def scan_or_404(session, tenant_id: str, scan_id: str) -> Scan:
    """The tenant's scan; 404 for unknown ids and for other tenants' scans alike."""
    scan = repository.get_scan(session, tenant_id, scan_id) if is_id(scan_id) else None
    if scan is None:
        raise HTTPException(404, f"scan {scan_id!r} not found")
    return scan


def scan_report(session, tenant_id: str, scan: Scan) -> ScanReport:
    """Each audit of ``scan`` with its dataset's filename and verdict line; totals."""
    audits = repository.scan_audits(session, scan.id)
    rows = []
    for audit in audits:
        dataset = repository.get_dataset(session, tenant_id, audit.dataset_id)
        stored = repository.get_report(session, audit.id) if audit.status == SUCCEEDED else None
        body = stored.body if stored is not None else {}
        rows.append(ScanReportAudit(audit_id=audit.id, dataset_id=audit.dataset_id,
                                    filename=dataset.filename if dataset is not None else "", status=audit.status,
                                    flagged=len(body.get("flagged") or []) if stored is not None else None,
                                    status_line=body.get("status_line"), error=audit.error))
    flagged = [r.flagged for r in rows if r.flagged is not None]
    totals = ScanTotals(audits=len(rows), **status_counts(audits), flagged_audits=sum(1 for f in flagged if f),
                        flagged=sum(flagged))
    return ScanReport(id=scan.id, status=scan_status(audits), created_at=scan.created_at, config=scan.config,
                      totals=totals, audits=rows)


@cache
def _template():
    import jinja2

    return jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(SCAN_REPORT_HTML)


SCAN_REPORT_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>auditor scan {{ report.id }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; vertical-align: top; }
td.n { text-align: right; }
.failed, .canceled { color: #a40000; }
.flagged { font-weight: bold; }
</style>
</head>
<body>
<h1>Scan {{ report.id }}</h1>
<p>{{ report.status }}, created {{ report.created_at }}: {{ report.totals.audits }} audits,
{{ report.totals.succeeded }} succeeded, {{ report.totals.failed }} failed, {{ report.totals.canceled }} canceled,
{{ report.totals.queued + report.totals.running }} not finished;
{{ report.totals.flagged_audits }} with flags, {{ report.totals.flagged }} examples flagged.</p>
<table>
<tr><th>dataset</th><th>audit</th><th>status</th><th>flagged</th><th>verdict</th></tr>
{% for row in report.audits %}
<tr class="{{ row.status }}{% if row.flagged %} flagged{% endif %}">
<td>{{ row.filename }}</td><td><code>{{ row.audit_id }}</code></td><td>{{ row.status }}</td>
<td class="n">{{ "" if row.flagged is none else row.flagged }}</td>
<td>{{ row.status_line or row.error or "" }}</td></tr>
{% endfor %}
</table>
</body>
</html>
"""
