"""Postgres: provisioning, schema migrations, seed data, pool and repository."""
