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


def report_example(flagged: list[int], n: int = 12) -> dict:
    """A report that satisfies the report's schema (auditor.report_schema.Report), for tests
    that store a finished audit without running one."""
    from auditor.report_schema import Report

    summary = {"errors": [0.1, 0.2], "geomean": 0.14, "ci95": [0.1, 0.2], "extras": {}}
    return Report.model_validate({
        "flagged": flagged, "scores": [1.0 if i in flagged else 0.0 for i in range(n)], "trials": 10,
        "unconverged": 0, "verdict": "flagged" if flagged else "nothing_flagged",
        "fit": {"trials": 10, "unconverged": 0, "share_unconverged": 0.0, "fitted": True},
        "generalization": {"metric": "trusted-set relative error", "with_all": summary},
        "confirmation": {"confirmed": bool(flagged), "tested": flagged}, "strategy": "group", "mode": "blind",
        "budget": 160, "details": {}, "screens": {}, "kernels": {}, "seconds": 1.0,
        "reproduce": {"dataset_sha256": None, "dataset": {}, "config": {}, "versions": {}, "device": "cpu",
                      "platform": "test"},
        "evidence": [], "evidence_note": None,
        "sequence_profile": {"examples": n, "median": [0.0], "q10": [0.0], "q90": [0.0]},
        "status_line": f"{len(flagged)} of {n} examples flagged."}).model_dump(mode="json")
