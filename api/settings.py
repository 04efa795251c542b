"""Service settings, from ``AUDITOR_*`` environment variables or the ``serve`` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.engine import DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    """Configuration of the service: the HTTP API and its workers.

    Every field can be set by an environment variable named ``AUDITOR_`` plus the field
    name in capitals, e.g. ``AUDITOR_DATABASE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="AUDITOR_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL; SQLite or PostgreSQL")
    data_dir: Path = Field(Path("./auditor-data"), description="where uploaded dataset files are kept")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest accepted dataset file")
    max_dataset_bytes: int = Field(512 * 1024 * 1024, ge=1,
                                   description="largest total size of a dataset's arrays once decompressed")
    max_json_bytes: int = Field(1024 * 1024, ge=1, description="largest request body of every route but the "
                                                                "dataset upload")
    auth_cache_seconds: float = Field(0.5, ge=0, le=1,
                                      description="how long a verified key is trusted without a database lookup "
                                                  "(at most 1 s, so a revoked key is refused within 1 s); 0: never")
    rate_limit_per_second: float = Field(20.0, ge=0, description="requests per second per API key, sustained "
                                                                 "(token bucket); 0: no limit")
    rate_limit_burst: int = Field(200, ge=1, description="requests per API key allowed at once above the rate")
    auth_failures_per_second: float = Field(1.0, ge=0, description="failed authentications per second per client "
                                                                   "address, sustained; 0: no limit")
    auth_failures_burst: int = Field(50, ge=1, description="failed authentications per client address allowed "
                                                           "at once before 429s")
    max_expansion_ratio: float = Field(100.0, ge=1,
                                       description="largest ratio of a dataset's decompressed arrays to its file "
                                                   "size (1 MiB of arrays is always allowed)")
    allowed_devices: str = Field("cpu", pattern=r"^\s*(cpu|cuda(:\d+)?)(\s*,\s*(cpu|cuda(:\d+)?))*\s*$",
                                 description="comma-separated devices an audit's config may name")
    max_running_audits_per_tenant: int = Field(1, ge=1, le=1000,
                                               description="running audits of one tenant, over every dispatcher")
    max_queued_audits_per_tenant: int = Field(100, ge=1, description="queued audits one tenant may have")
    max_audit_trial_steps: int = Field(1_000_000_000, ge=1,
                                       description="most trials x max_steps one audit may cost")
    max_tenant_trial_steps: int = Field(10_000_000_000, ge=1,
                                        description="most trials x max_steps over one tenant's queued and running "
                                                    "audits")
    db_pool_size: int = Field(10, ge=1, le=200, description="database connections kept open")
    ray_address: str | None = Field(None, description="Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT); "
                                                      "unset: start a local one")
    max_running_audits: int = Field(2, ge=1, le=64, description="audits one dispatcher runs at once")
    retrainers: int | None = Field(None, ge=1, description="retrainer actors (default: one per GPU, else per CPU)")
    retrainer_gpus: float = Field(0.0, ge=0, description="GPUs per retrainer actor (0: CPU actors)")
    heartbeat_seconds: float = Field(2.0, gt=0, le=60, description="how often a running audit reports alive")
    stale_after_seconds: float = Field(30.0, gt=0, description="requeue a running audit silent this long")

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices of :attr:`allowed_devices`, in order."""
        return tuple(d.strip() for d in self.allowed_devices.split(",") if d.strip())
