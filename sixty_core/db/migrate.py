"""Ordered SQL migrations, applied once each and recorded in ``schema_migrations``.

Migrations are the ``NNNN_name.sql`` files beside this module, applied in file-name order,
each in its own transaction together with its ``schema_migrations`` row, so a failed
migration leaves nothing behind. A session-level advisory lock serialises concurrent runs.
Applying twice is a no-op; a recorded migration whose file changed is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from sixty_core.errors import SixtyError

#: Arbitrary constant key for pg_advisory_lock, so two migrators never interleave.
_MIGRATION_LOCK_KEY = 0x5157_7900


class MigrationError(SixtyError):
    """A migration failed or no longer matches what was applied."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version (the numeric prefix), name and content checksum."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Return the bundled migrations in the order they must be applied."""
    folder = resources.files("sixty_core.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(version, rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every pending migration on ``conn``; return the versions applied now.

    Raises :class:`MigrationError` when an applied migration's checksum differs from the
    bundled file (someone edited history) or when a migration fails (it is rolled back).
    """
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        done: list[str] = []
        for migration in load_migrations():
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was applied with a "
                        "different content; refusing to continue on a diverged schema"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed and was rolled "
                    f"back: {exc}"
                ) from exc
            done.append(migration.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
