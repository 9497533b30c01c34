"""Alembic migrations of corral's catalogue; `registry.db.upgrade_database` runs them at startup."""
