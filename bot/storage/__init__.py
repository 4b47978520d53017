"""The database: engine and sessions, every table, Alembic migrations."""
