"""Alembic migrations of the service database (see ``store.migrate``)."""
