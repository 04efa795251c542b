"""Upload datasets (.npz, CSV or Parquet, validated before anything is stored) and read their metadata."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Response, UploadFile

from api.deps import CurrentPrincipal, CursorQuery, IdPath, LimitQuery, SessionDep, SettingsDep
from api.errors import responses
from api.routers import PREFIX
from api.schemas import DatasetOut, DatasetPage
from auditor.data import DatasetTooLarge, check_auditable, parse_dataset
from store import repository
from store.blobs import put_blob, remove_blob
from store.models import Dataset, is_id

router = APIRouter(prefix=f"{PREFIX}/datasets", tags=["datasets"])


def dataset_out(row: Dataset) -> DatasetOut:
    """The API view of a dataset row."""
    summary = row.summary
    return DatasetOut(id=row.id, filename=row.filename, sha256=row.sha256, size_bytes=row.size_bytes, n=row.n,
                      length=row.length, channels=row.channels, task=row.task, n_val=summary.get("n_val"),
                      length_val=summary.get("length_val"), has_ground_truth=bool(summary.get("has_ground_truth")),
                      created_at=row.created_at)


def _clean_filename(name: str | None) -> str:
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base[:255] or "dataset.npz"


@router.post("", status_code=201, operation_id="create_dataset", response_model=DatasetOut,
             responses=responses(400, 401, 413, 422))
def create_dataset(principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep, response: Response,
                   file: Annotated[UploadFile, File(description="an .npz, CSV or Parquet dataset (docs/data.md)")]
                   ) -> DatasetOut:
    """Upload a dataset. It is validated in full first; an invalid file leaves nothing behind.

    A file over ``max_upload_bytes``, or whose arrays would take more than
    ``max_dataset_bytes`` or ``max_expansion_ratio`` times its size once decompressed, is a
    413 (checked from each array's header, or from a table's rows and columns, before it is
    read); an invalid file, or one the audit cannot run on, is a 422. The file is an .npz
    archive, or a CSV or Parquet table (docs/data.md), told apart by its content.
    """
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"file is over the limit of {settings.max_upload_bytes} bytes")
    try:
        dataset = parse_dataset(data, max_array_bytes=settings.max_dataset_bytes,
                                max_expansion_ratio=settings.max_expansion_ratio)
    except DatasetTooLarge as exc:
        raise HTTPException(413, f"dataset {exc}") from None
    check_auditable(dataset)
    summary = dataset.summary()
    del dataset
    uri, created = put_blob(settings.data_dir, summary["sha256"], data)
    try:
        row = repository.add_dataset(session, tenant_id=principal.tenant_id, filename=_clean_filename(file.filename),
                                     size_bytes=len(data), uri=uri, summary=summary)
    except BaseException:
        session.rollback()
        if created and not repository.uri_in_use(session, uri):
            remove_blob(uri)
        raise
    response.headers["Location"] = f"{router.prefix}/{row.id}"
    return dataset_out(row)


@router.get("", operation_id="list_datasets", response_model=DatasetPage, responses=responses(400, 401, 422))
def list_datasets(principal: CurrentPrincipal, session: SessionDep, limit: LimitQuery = 50,
                  cursor: CursorQuery = None) -> DatasetPage:
    """The tenant's datasets, newest first, one page at a time."""
    page = repository.list_datasets(session, principal.tenant_id, limit=limit, cursor=cursor)
    return DatasetPage(items=[dataset_out(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", operation_id="get_dataset", response_model=DatasetOut, responses=responses(401, 404, 422))
def get_dataset(dataset_id: IdPath, principal: CurrentPrincipal, session: SessionDep) -> DatasetOut:
    """One dataset's metadata."""
    row = repository.get_dataset(session, principal.tenant_id, dataset_id) if is_id(dataset_id) else None
    if row is None:
        raise HTTPException(404, f"dataset {dataset_id!r} not found")
    return dataset_out(row)
