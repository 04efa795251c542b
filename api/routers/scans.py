"""Scans: one request, many datasets, one config; a summary over their audits."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from api.deps import CurrentPrincipal, IdPath, SessionDep, SettingsDep
from api.errors import responses
from api.routers import PREFIX
from api.routers.audits import check_config, quota
from api.schemas import ScanAudit, ScanCreate, ScanOut
from store import repository
from store.models import FINISHED, QUEUED, STATUSES, Audit, Scan, is_id

router = APIRouter(prefix=f"{PREFIX}/scans", tags=["scans"])


def scan_out(session, scan: Scan, audits: list[Audit]) -> ScanOut:
    """The summary of a scan over its audits."""
    flagged = repository.flagged_counts(session, [a.id for a in audits])
    counts = dict.fromkeys(STATUSES, 0)
    for audit in audits:
        counts[audit.status] += 1
    if all(a.status in FINISHED for a in audits):
        status = "finished"
    elif all(a.status == QUEUED for a in audits):
        status = "queued"
    else:
        status = "running"
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
    check_config(body.config, settings, [(d, found[d].n, found[d].task) for d in dataset_ids])
    scan, audits = repository.create_scan(session, tenant_id=principal.tenant_id, dataset_ids=dataset_ids,
                                          config=body.config.model_dump(mode="json"), quota=quota(settings))
    response.headers["Location"] = f"{router.prefix}/{scan.id}"
    return scan_out(session, scan, audits)


@router.get("/{scan_id}", operation_id="get_scan", response_model=ScanOut, responses=responses(401, 404, 422))
def get_scan(scan_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> ScanOut:
    """A scan's summary: overall status and progress, counts per status, flagged examples per audit."""
    scan = repository.get_scan(session, principal.tenant_id, scan_id) if is_id(scan_id) else None
    if scan is None:
        raise HTTPException(404, f"scan {scan_id!r} not found")
    return scan_out(session, scan, repository.scan_audits(session, scan.id))
