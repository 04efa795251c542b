"""Service settings, from ``AUDITOR_*`` environment variables or the ``serve`` flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.engine import DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    """Configuration of the HTTP service.

    Every field can be set by an environment variable named ``AUDITOR_`` plus the field
    name in capitals, e.g. ``AUDITOR_DATABASE_URL``.
    """

    model_config = SettingsConfigDict(env_prefix="AUDITOR_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL; SQLite or PostgreSQL")
    data_dir: Path = Field(Path("./auditor-data"), description="where uploaded dataset files are kept")
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest accepted dataset file")
    max_dataset_bytes: int = Field(512 * 1024 * 1024, ge=1,
                                   description="largest total size of a dataset's arrays once decompressed")
    auth_cache_seconds: float = Field(30.0, ge=0, le=3600,
                                      description="how long a verified key is trusted without a lookup; 0: never")
    db_pool_size: int = Field(10, ge=1, le=200, description="database connections kept open")
