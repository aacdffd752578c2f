"""Database workflows behind ``sixty db``: prepare, check and keep a seeded Postgres.

Each workflow records the time of every step in a :class:`StepLog`, so the CLI can print
what took how long without timing anything itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sixty_core.db.migrate import migrate
from sixty_core.db.provision import Database, connect, provision
from sixty_core.db.seed import SeedOwner, SeedReport, owners_as_json, seed, seeded_owners
from sixty_core.settings import Settings
from sixty_core.tokens import hash_token


@dataclass
class StepLog:
    """Named steps with their durations in seconds, in the order they ran."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    on_step: Callable[[str, float], None] | None = None
    clock: Callable[[], float] = time.perf_counter

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = self.clock()
        yield
        elapsed = self.clock() - started
        self.steps.append((name, elapsed))
        if self.on_step is not None:
            self.on_step(name, elapsed)


@dataclass(frozen=True)
class CheckResult:
    """What ``sixty db check`` found: the seed report and the sanity figures."""

    database: Database
    seed: SeedReport
    sanity: dict[str, Any]


async def migrate_and_seed(
    dsn: str, *, scale: int, seed_value: int, log: StepLog, reset: bool = False
) -> SeedReport:
    """Migrate the database at ``dsn`` and seed it; both steps are timed in ``log``."""
    conn = await connect(dsn)
    try:
        with log.step("migrate"):
            await migrate(conn)
        with log.step("seed"):
            return await seed(conn, scale=scale, seed=seed_value, reset=reset)
    finally:
        await conn.close()


async def sanity(dsn: str) -> dict[str, Any]:
    """Return row counts and invariant checks that must hold on any seeded database."""
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM profiles) AS owners,
              (SELECT count(*) FROM deals) AS deals,
              (SELECT count(*) FROM deals
                WHERE value <> one_off_revenue + 3 * monthly_mrr
                   OR annual_value <> one_off_revenue + 12 * monthly_mrr) AS revenue_mismatches,
              (SELECT coalesce(sum(d.value * s.default_probability / 100.0), 0)
                 FROM deals d JOIN deal_stages s ON s.id = d.stage_id
                WHERE d.status = 'active') AS weighted_pipeline_value,
              (SELECT count(*) FROM sessions WHERE revoked_at IS NULL) AS sessions
            """
        )
        assert row is not None
        return {k: (float(v) if k == "weighted_pipeline_value" else v) for k, v in row.items()}
    finally:
        await conn.close()


async def check(settings: Settings, *, log: StepLog) -> CheckResult:
    """Provision, migrate, seed, run the sanity query and tear down, timing each step."""
    async with AsyncExitStack() as stack:
        with log.step("provision"):
            database = await stack.enter_async_context(provision(settings))
        report = await migrate_and_seed(
            database.dsn, scale=settings.seed_scale, seed_value=settings.seed, log=log
        )
        with log.step("sanity query"):
            figures = await sanity(database.dsn)
        with log.step("tear down"):
            await stack.aclose()
    return CheckResult(database=database, seed=report, sanity=figures)


@asynccontextmanager
async def seeded_database(
    settings: Settings, *, log: StepLog, tokens_file: Path | None = None
) -> AsyncIterator[tuple[Database, SeedReport]]:
    """Provision, migrate and seed; yield the database and the seed report until exit.

    With ``tokens_file``, the seeded owners and their bearer tokens are written there as
    JSON (mode 0600: the tokens are credentials).
    """
    async with AsyncExitStack() as stack:
        with log.step("provision"):
            database = await stack.enter_async_context(provision(settings))
        report = await migrate_and_seed(
            database.dsn, scale=settings.seed_scale, seed_value=settings.seed, log=log
        )
        if tokens_file is not None:
            write_tokens_file(tokens_file, report)
        yield database, report


@asynccontextmanager
async def seeded_dsn(
    settings: Settings, *, log: StepLog, dsn: str | None = None
) -> AsyncIterator[tuple[str, list[SeedOwner]]]:
    """(DSN, seeded owners) of a database seeded at ``settings``' scale and seed: ``dsn``
    as it is when given (a database the caller seeded, such as a template clone), else one
    provisioned and seeded for the block."""
    if dsn is not None:
        yield dsn, seeded_owners(settings.seed_scale, settings.seed)
        return
    async with seeded_database(settings, log=log) as (database, report):
        yield database.dsn, report.owners


def write_tokens_file(path: Path, report: SeedReport) -> None:
    """Write the seeded owners and tokens to ``path`` (created 0600, parents as needed)."""
    write_owner_tokens(path, seed=report.seed, scale=report.scale, owners=report.owners)


def write_owner_tokens(path: Path, *, seed: int, scale: int, owners: list[SeedOwner]) -> None:
    """Write ``owners`` and their tokens to ``path`` (created 0600, parents as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seed": seed, "scale": scale, "owners": owners_as_json(owners)}
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


async def seeded_owners_of(dsn: str, *, scale: int, seed_value: int) -> list[SeedOwner] | None:
    """The owners that ``(scale, seed_value)`` seeds, if the database at ``dsn`` holds a
    live session for every one of them; None otherwise (seeded differently, or not at all).

    Tokens are derivable, so a database seeded elsewhere needs only its seed to be used.
    """
    owners = seeded_owners(scale, seed_value)
    conn = await connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE token_hash = ANY($1::text[]) "
            "AND revoked_at IS NULL AND expires_at > now()",
            [hash_token(o.token) for o in owners],
        )
    finally:
        await conn.close()
    return owners if found == len(owners) else None
