"""Helpers of the API tests: dataset files and common requests."""

from __future__ import annotations

import io

import httpx
import numpy as np

MAX_UPLOAD = 256 * 1024  # upload limit of the test servers
MAX_EXPANDED = 4 * 1024 * 1024  # their limit on decompressed arrays
OPERATIONS = ("get_health", "get_metrics", "create_dataset", "list_datasets", "get_dataset", "create_audit",
              "list_audits", "get_audit", "get_audit_report", "get_audit_cleaned", "cancel_audit", "create_scan",
              "list_scans", "get_scan", "get_scan_report", "list_keys", "revoke_key")


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def valid_arrays(n: int = 12, k: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, k)), "y": rng.normal(size=n),
            "x_val": rng.normal(size=(4, 2 * k)), "y_val": rng.normal(size=4)}


def valid_npz(seed: int = 0) -> bytes:
    return npz_bytes(**valid_arrays(seed=seed))


def upload(client: httpx.Client, data: bytes, filename: str = "train.npz") -> httpx.Response:
    return client.post("/datasets", files={"file": (filename, data, "application/octet-stream")})


def submit(client: httpx.Client, dataset: str, config: dict | None = None, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    body = {"dataset_id": dataset} if config is None else {"dataset_id": dataset, "config": config}
    return client.post("/audits", json=body, headers=headers)
