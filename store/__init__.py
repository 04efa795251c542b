"""Persistence: the one SQLAlchemy model and repository layer shared by the API and workers.

``store.models`` declares the tables, ``store.engine`` builds engines and sessions,
``store.repository`` holds every query and write, ``store.blobs`` keeps dataset files in a
content-addressed directory and ``store.migrate`` runs the Alembic migrations.
"""
