"""Submit audits (idempotently), follow their status, fetch reports, cancel."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import CurrentPrincipal, CursorQuery, IdPath, LimitQuery, SessionDep, SettingsDep, read_in_thread
from api.errors import responses
from api.routers import PREFIX
from api.schemas import AuditCreate, AuditOut, AuditPage, AuditStatus
from api.settings import Settings
from auditor.config import AuditConfig, trial_steps
from auditor.models import ModelError, check_model_name
from auditor.report_schema import Report
from store import repository
from store.blobs import read_blob
from store.models import CANCELED, FAILED, SUCCEEDED, Audit, is_id

router = APIRouter(prefix=f"{PREFIX}/audits", tags=["audits"])

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                              description="repeat a submission safely: the same key returns "
                                                          "the same audit")]
FilterId = Annotated[str | None, Query(max_length=64)]


def audit_or_404(session, tenant_id: str, audit_id: str) -> Audit:
    """The tenant's audit; 404 for unknown ids and for other tenants' audits alike."""
    audit = repository.get_audit(session, tenant_id, audit_id) if is_id(audit_id) else None
    if audit is None:
        raise HTTPException(404, f"audit {audit_id!r} not found")
    return audit


def config_error(field: str, message: str) -> RequestValidationError:
    """A 422 naming ``body.config.<field>`` (``field`` empty: the config as a whole)."""
    loc = ("body", "config", field) if field else ("body", "config")
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def audit_cost(config: dict, n: int, task: str) -> int:
    """Trials x max_steps of an audit of ``n`` examples under a stored ``config`` (0 if unreadable)."""
    try:
        return trial_steps(AuditConfig.from_stored(config), n=n, task=task)
    except (TypeError, ValueError):
        return 0


def check_config(config: AuditConfig, settings: Settings, datasets: list) -> None:
    """422 for a config this service cannot run: a model that is not registered (a service
    never imports code a request names), a device it does not offer, a forensics audit of a
    dataset without its attacked example, the ``network`` student on a set of several
    channels or outputs (it reads one into one), or an audit of one of ``datasets`` (stored
    rows) that would cost more trial-steps than one audit may."""
    try:
        check_model_name(config.model, allow_import=False)
    except ModelError as exc:
        raise config_error("model", str(exc)) from None
    if config.device not in settings.devices:
        raise config_error("device", f"device {config.device!r} is not offered by this service; "
                                     f"allowed: {', '.join(settings.devices)}")
    cap = min(settings.max_audit_trial_steps, settings.max_tenant_trial_steps)
    for row in datasets:
        if config.mode == "forensics" and not row.summary.get("n_target"):
            raise config_error("mode", f"dataset {row.id} has no attacked example (x_target, y_target) for a "
                                       "forensics audit; audit it blind")
        wide = (row.summary.get("channels") or 1) > 1 or (row.summary.get("outputs") or 1) > 1
        if config.model == "network" and row.task == "regression" and wide:
            raise config_error("model", f"dataset {row.id} has {row.summary.get('channels') or 1} channel(s) and "
                                        f"{row.summary.get('outputs') or 1} output(s); the network student reads "
                                        "one channel into one output (use the ssm student)")
        cost = trial_steps(config, n=row.n, task=row.task)
        if cost > cap:
            trials = cost // config.max_steps
            raise config_error("", f"an audit of dataset {row.id} would cost up to {trials} trials x "
                                   f"{config.max_steps} max_steps = {cost} trial-steps, over the limit of {cap}; "
                                   "lower budget, confirm_seeds or max_steps")


def quota(settings: Settings) -> repository.Quota:
    """The per-tenant quota of queued audits and of their cost."""
    return repository.Quota(max_queued=settings.max_queued_audits_per_tenant,
                            max_cost=settings.max_tenant_trial_steps, cost=audit_cost)


@router.post("", status_code=202, operation_id="create_audit", response_model=AuditOut,
             responses=responses(400, 401, 404, 409, 413, 422, 429))
def create_audit(body: AuditCreate, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep,
                 response: Response, idempotency_key: IdempotencyKey = None) -> AuditOut:
    """Queue an audit of a dataset.

    With an ``Idempotency-Key``, repeating the request returns the first audit (header
    ``Idempotent-Replayed: true``); the same key with a different body is a 409. A device
    the service does not offer, or an audit over the cost limit, is a 422; a tenant over
    its quota of queued audits or of their cost gets a 429 with ``Retry-After``.
    """
    dataset = repository.get_dataset(session, principal.tenant_id, body.dataset_id) if is_id(body.dataset_id) else None
    if dataset is None:
        raise HTTPException(404, f"dataset {body.dataset_id!r} not found")
    check_config(body.config, settings, [dataset])
    audit, created = repository.create_audit(session, tenant_id=principal.tenant_id, dataset_id=body.dataset_id,
                                             config=body.config.model_dump(mode="json"),
                                             idempotency_key=idempotency_key, quota=quota(settings))
    response.headers["Location"] = f"{router.prefix}/{audit.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return AuditOut.model_validate(audit)


@router.get("", operation_id="list_audits", response_model=AuditPage, responses=responses(400, 401, 422))
def list_audits(principal: CurrentPrincipal, session: SessionDep, status: AuditStatus | None = None,
                dataset_id: FilterId = None, scan_id: FilterId = None, limit: LimitQuery = 50,
                cursor: CursorQuery = None) -> AuditPage:
    """The tenant's audits, newest first, filtered by status, dataset or scan."""
    if (dataset_id is not None and not is_id(dataset_id)) or (scan_id is not None and not is_id(scan_id)):
        return AuditPage(items=[], next_cursor=None)
    page = repository.list_audits(session, principal.tenant_id, status=status, dataset_id=dataset_id,
                                  scan_id=scan_id, limit=limit, cursor=cursor)
    return AuditPage(items=[AuditOut.model_validate(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/{audit_id}", operation_id="get_audit", response_model=AuditOut, responses=responses(401, 404, 422))
async def get_audit(audit_id: IdPath, principal: CurrentPrincipal, request: Request) -> Response:
    """An audit's status and progress."""
    body = await read_in_thread(request, _audit_json, principal.tenant_id, audit_id)
    return Response(body, media_type="application/json")


def _audit_json(session, tenant_id: str, audit_id: str) -> bytes:
    # validated once here and sent as it is: the hot path of polling clients, where FastAPI's
    # response_model would validate and serialize the same object a second time
    return AuditOut.model_validate(audit_or_404(session, tenant_id, audit_id)).model_dump_json().encode()


@router.get("/{audit_id}/report", operation_id="get_audit_report",
            responses={200: {"description": "The report, as JSON (default) or HTML", "model": Report,
                             "content": {"text/html": {"schema": {"type": "string"}}}},
                       **responses(401, 404, 409, 422)})
def get_audit_report(audit_id: IdPath, principal: CurrentPrincipal, session: SessionDep, request: Request,
                     format: Annotated[Literal["json", "html"] | None,
                                       Query(description="overrides the Accept header")] = None) -> Response:
    """The report of a succeeded audit: JSON, or HTML with ``?format=html`` or ``Accept: text/html``.

    409 while the audit is queued or running, and for failed or canceled audits.
    """
    _, report = succeeded_report(session, principal.tenant_id, audit_id)
    if wants_html(format, request.headers.get("accept", "")):
        return HTMLResponse(report.html)
    return JSONResponse(report.body)


def succeeded_report(session, tenant_id: str, audit_id: str):
    """The tenant's audit and its stored report; 404 as :func:`audit_or_404`, 409 unless it succeeded."""
    audit = audit_or_404(session, tenant_id, audit_id)
    if audit.status != SUCCEEDED:
        reason = {FAILED: f"audit failed: {audit.error}", CANCELED: "audit was canceled; it has no report"}
        raise HTTPException(409, reason.get(audit.status, f"audit is {audit.status}; the report is ready once it "
                                                          "has succeeded"))
    report = repository.get_report(session, audit.id)
    if report is None:
        raise HTTPException(409, "audit succeeded but its report is not stored yet")
    return audit, report


@router.get("/{audit_id}/cleaned", operation_id="get_audit_cleaned",
            responses={200: {"description": "The audited dataset without the flagged examples (.npz)",
                             "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}},
                       **responses(401, 404, 409, 422)})
def get_audit_cleaned(audit_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> Response:
    """The audit's dataset without the examples its report flags, as an .npz download.

    Training arrays lose the flagged rows, the reference set is kept. 409 while the audit
    is queued or running, and for failed or canceled audits.
    """
    from auditor.cleaning import cleaned_bytes
    from auditor.data import DatasetError

    audit, report = succeeded_report(session, principal.tenant_id, audit_id)
    row = repository.get_dataset(session, principal.tenant_id, audit.dataset_id)
    try:
        data = read_blob(row.uri) if row is not None else None
    except (OSError, ValueError):
        data = None
    if data is None:
        raise HTTPException(409, "the audited dataset file is no longer stored")
    try:
        body = cleaned_bytes(data, report.body.get("flagged") or [])
    except (DatasetError, ValueError) as exc:
        raise HTTPException(409, f"cannot clean the dataset: {exc}") from None
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(row.filename).stem)[:100] or "dataset"
    return Response(body, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{stem}-cleaned.npz"'})


def wants_html(format: str | None, accept: str) -> bool:
    """Whether to answer HTML: ``format`` wins, else the Accept header's preference."""
    if format is not None:
        return format == "html"
    quality = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    html = quality.get("text/html", 0.0)
    return html > 0 and html > max(quality.get("application/json", 0.0), quality.get("application/*", 0.0))


@router.post("/{audit_id}/cancel", operation_id="cancel_audit", response_model=AuditOut,
             responses=responses(401, 404, 409, 422))
def cancel_audit(audit_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> AuditOut:
    """Cancel an audit: a queued one at once, a running one when its worker next checks in.

    Canceling a canceled audit changes nothing; a succeeded or failed one is a 409.
    """
    if not is_id(audit_id):
        raise HTTPException(404, f"audit {audit_id!r} not found")
    return AuditOut.model_validate(repository.request_cancel(session, principal.tenant_id, audit_id))
