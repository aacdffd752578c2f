"""Small moves every scenario makes: a timed request, an owner's deal, a create body, the
deal inside either profile's create answer, and counting rows behind the service."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from sixty_core.db.seed import SeedOwner
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Resources, Stack

#: What a transport failure answers as in a trial: no HTTP status at all.
NO_ANSWER = 0


async def timed(
    stack: Stack, trial: Trial, method: str, path: str, owner: SeedOwner | str | None, **kw: Any
) -> tuple[int, float, httpx.Response | None]:
    """Send one request and count it in ``trial``: (status or NO_ANSWER, seconds, response).

    A transport error (the service hung up, the client's own timeout) is a finding: the
    service promised an answer."""
    started = time.monotonic()
    try:
        response = await stack.call(method, path, owner, **kw)
    except httpx.HTTPError as exc:
        elapsed = time.monotonic() - started
        trial.latencies_ms.append(elapsed * 1000.0)
        trial.requests += 1
        trial.expect(False, f"{method} {_shape(path)}: no answer ({type(exc).__name__})")
        return NO_ANSWER, elapsed, None
    elapsed = time.monotonic() - started
    trial.answered(response.status_code, elapsed)
    return response.status_code, elapsed, response


def _shape(path: str) -> str:
    """``path`` with ids replaced, so findings group instead of listing every uuid."""
    parts = []
    for part in path.split("?")[0].split("/"):
        try:
            uuid.UUID(part)
        except ValueError:
            parts.append(part)
        else:
            parts.append("{id}")
    return "/".join(parts)


async def own_deals(stack: Stack, owner: SeedOwner, limit: int = 5) -> list[dict[str, Any]]:
    """Up to ``limit`` of ``owner``'s active deals, read behind the service (so reading them
    warms no cache and counts no request)."""
    rows = await stack.rows(
        "SELECT id::text AS id, name, version, stage_id::text AS stage_id FROM deals"
        " WHERE owner_id = $1::uuid AND status = 'active' ORDER BY id LIMIT $2",
        owner.id,
        limit,
    )
    return [dict(row) for row in rows]


def create_body(owner: SeedOwner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "company": "Reliability Ltd",
        "owner_id": owner.id,
        "one_off_revenue": 1000,
    }


def created_deal(stack: Stack, body: Any) -> dict[str, Any] | None:
    """The deal inside a create answer in the profile's shape (legacy double-wraps it)."""
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    if isinstance(data, dict) and "robust_create" not in stack.profile.flags:
        data = data.get("data")
    return data if isinstance(data, dict) and "id" in data else None


async def keyed_create(
    stack: Stack, trial: Trial, owner: SeedOwner, name: str
) -> tuple[int, httpx.Response | None]:
    """One timed create of a deal called ``name`` with ``name`` as its Idempotency-Key:
    (status or NO_ANSWER, response)."""
    status, _, response = await timed(
        stack,
        trial,
        "POST",
        "/api/deals",
        owner,
        json=create_body(owner, name),
        headers={"Idempotency-Key": name},
    )
    return status, response


async def check_exactly_once(
    stack: Stack, trial: Trial, prefix: str, statuses: Mapping[str, int]
) -> None:
    """Each create (name -> final status) accepted with 201 wrote one row, none wrote two,
    and none answered as failed wrote any: rows lost and duplicated are recorded."""
    rows = await rows_named(stack, prefix)
    accepted = {name for name, status in statuses.items() if status == 201}
    lost = sum(1 for name in accepted if rows.get(name, 0) == 0)
    duplicated = sum(n - 1 for n in rows.values() if n > 1)
    phantom = sum(1 for name in rows if name not in accepted)
    trial.record(rows_lost=lost, rows_duplicated=duplicated)
    trial.expect(lost == 0, f"{lost} accepted create(s) wrote no row")
    trial.expect(duplicated == 0, f"{duplicated} duplicate row(s) from {len(accepted)} creates")
    trial.expect(phantom == 0, f"{phantom} create(s) answered as failed wrote a row")


async def rows_named(stack: Stack, prefix: str) -> dict[str, int]:
    """How many deals carry each name starting with ``prefix`` (a scenario's own rows)."""
    rows = await stack.rows(
        "SELECT name, count(*) AS n FROM deals WHERE starts_with(name, $1) GROUP BY name",
        prefix,
    )
    return {row["name"]: int(row["n"]) for row in rows}


def run_tag() -> str:
    """A short unique tag for one scenario's rows."""
    return uuid.uuid4().hex[:8]


async def warm(stack: Stack) -> None:
    """Open the pool's connections and the caches, so a baseline means something."""
    owner = stack.user(1)
    await asyncio.gather(*(stack.call("GET", "/api/health") for _ in range(4)))
    await stack.call("GET", "/api/deals?limit=5", owner)


async def baseline(stack: Stack) -> Resources:
    await warm(stack)
    return await stack.resources()


async def check_leaks(
    stack: Stack, trial: Trial, baseline: Resources, *, within_s: float = 5.0
) -> None:
    """Leak findings for every resource not back at ``baseline`` within ``within_s``."""
    settled = await stack.settled_resources(baseline, within_s=within_s)
    leaked = settled.leaks_against(baseline)
    trial.record(leaked=leaked)
    for name, delta in leaked.items():
        new = {"tasks": settled.new_tasks, "fds": settled.new_fds}.get(name)
        evidence = f": {', '.join(new(baseline)[:4])}" if new is not None else ""
        trial.expect(False, f"{delta} {name.replace('_', ' ')} not back after the fault{evidence}")
