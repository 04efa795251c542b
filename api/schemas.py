"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from auditor.config import AuditConfig

AuditStatus = Literal["queued", "running", "succeeded", "failed", "canceled"]
IdStr = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="where in the request the problem is")
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error response: ``detail`` says what is wrong; ``errors`` itemizes invalid fields."""

    detail: str
    errors: list[ErrorItem] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str
    sha256: str
    size_bytes: int
    n: int = Field(description="training sequences")
    length: int = Field(description="training sequence length k")
    channels: int
    task: Literal["classification", "regression"]
    n_val: int | None = Field(description="trusted reference sequences, if any")
    length_val: int | None
    has_ground_truth: bool
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: IdStr
    config: AuditConfig = Field(default_factory=AuditConfig)


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    scan_id: str | None
    status: AuditStatus
    progress: float = Field(ge=0, le=1)
    trials_done: int
    stage: str | None
    cancel_requested: bool
    error: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class ScanCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_ids: list[IdStr] = Field(min_length=1, max_length=1000, description="one audit per dataset")
    config: AuditConfig = Field(default_factory=AuditConfig)


class ScanAudit(BaseModel):
    id: str
    dataset_id: str
    status: AuditStatus
    progress: float
    flagged: int | None = Field(description="examples flagged, once the audit succeeded")


class ScanOut(BaseModel):
    id: str
    status: Literal["queued", "running", "finished"]
    progress: float = Field(ge=0, le=1, description="mean progress of the audits")
    counts: dict[str, int] = Field(description="audits per status")
    flagged_total: int = Field(description="examples flagged over the succeeded audits")
    config: dict[str, Any]
    created_at: datetime
    audits: list[ScanAudit]


class ScanPage(BaseModel):
    items: list[ScanOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class ScanReportAudit(BaseModel):
    audit_id: str
    dataset_id: str
    filename: str = Field(description="the dataset's file name as uploaded")
    status: AuditStatus
    flagged: int | None = Field(description="examples flagged, once the audit succeeded")
    status_line: str | None = Field(description="the verdict in one line, once the audit succeeded")
    error: str | None = Field(description="why the audit failed, if it did")


class ScanTotals(BaseModel):
    audits: int
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int
    flagged_audits: int = Field(description="succeeded audits that flagged examples")
    flagged: int = Field(description="examples flagged over the succeeded audits")


class ScanReport(BaseModel):
    """A scan's summary: each audit's verdict line, and totals."""

    id: str
    status: Literal["queued", "running", "finished"]
    created_at: datetime
    config: dict[str, Any]
    totals: ScanTotals
    audits: list[ScanReportAudit]


class KeyOut(BaseModel):
    """An API key as the API shows it: never its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="the key id: the part after 'aud_' of the key")
    created_at: datetime
    revoked_at: datetime | None = Field(description="when it was revoked; null while it is valid")
    current: bool = Field(False, description="whether this request was made with this key")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")
