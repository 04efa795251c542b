"""The HTTP service (FastAPI) under /api/v1."""
