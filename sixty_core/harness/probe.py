"""Statements and auth lookups per request, per endpoint, from a running service.

Sends each endpoint's request ``repeats`` times, one at a time, as one non-admin seeded
owner and reads the ``X-Sixty-Queries`` / ``X-Sixty-Auth-Lookups`` headers of every answer:
statements counted on the connection where the driver sends them (``BEGIN``/``COMMIT``,
the pool's reset on release, and a create's insert in the edge process included). The
first request shows the cold cost (empty caches), the later ones the steady state. Writes
are made on a deal the probe creates itself, so probing changes no seeded row.

Sent one at a time in this fixed order, the counts are deterministic for a profile (no
request can join another's cache load), which makes them a metric a CI gate can trust;
:func:`markdown_table` renders the README's comparison from them.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from sixty_core.db import workflow
from sixty_core.errors import SixtyError
from sixty_core.settings import Settings

DEFAULT_REPEATS = 5


@dataclass
class EndpointCounts:
    """Counts seen for one endpoint: one entry per request, in order."""

    endpoint: str
    statuses: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    auth_lookups: list[int] = field(default_factory=list)
    #: Response body sizes: a list that stops being bounded shows here, not in statements.
    response_bytes: list[int] = field(default_factory=list)
    #: Writes whose effect the next read of the same deal did not show (writes only).
    stale_reads: int = 0

    @property
    def first_queries(self) -> int:
        return self.queries[0]

    @property
    def steady_queries(self) -> float:
        """Mean queries of the requests after the first (the first when only one)."""
        rest = self.queries[1:] or self.queries
        return statistics.fmean(rest)

    @property
    def steady_response_bytes(self) -> float:
        rest = self.response_bytes[1:] or self.response_bytes
        return statistics.fmean(rest) if rest else 0.0

    @property
    def steady_auth_lookups(self) -> float:
        rest = self.auth_lookups[1:] or self.auth_lookups
        return statistics.fmean(rest)


def _record(counts: EndpointCounts, response: httpx.Response) -> None:
    counts.statuses.append(response.status_code)
    counts.queries.append(int(response.headers.get("x-sixty-queries", "-1")))
    counts.auth_lookups.append(int(response.headers.get("x-sixty-auth-lookups", "-1")))
    counts.response_bytes.append(len(response.content))


def probe(
    base_url: str,
    token: str,
    owner_id: str,
    *,
    repeats: int = DEFAULT_REPEATS,
    on_request: Callable[[], None] | None = None,
) -> list[EndpointCounts]:
    """Probe every deal endpoint of the service at ``base_url``; return the counts.

    Raises :class:`SixtyError` if the service cannot be reached or refuses the token.
    """
    headers = {"Authorization": f"Bearer {token}"}
    results: list[EndpointCounts] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=60, trust_env=False) as http:
        try:
            first = http.get("/api/stages")
        except httpx.HTTPError as exc:
            raise SixtyError(f"cannot reach the service at {base_url}: {exc}") from None
        if first.status_code != 200:
            raise SixtyError(f"the service refused the probe's token ({first.status_code})")
        stages = first.json()["data"]
        created = http.post(
            "/api/deals", json={"name": "probe", "company": "probe", "owner_id": owner_id}
        )
        deal_id = _deal_of(created.json())["id"]

        results_by_name: dict[str, EndpointCounts] = {}

        def run(endpoint: str, call: Callable[[int], httpx.Response]) -> None:
            counts = results_by_name[endpoint] = EndpointCounts(endpoint)
            for i in range(repeats):
                _record(counts, call(i))
                if on_request is not None:
                    on_request()
            results.append(counts)

        created_ids: list[str] = []

        def create(i: int) -> httpx.Response:
            response = http.post(
                "/api/deals", json={"name": f"probe {i}", "company": "probe", "owner_id": owner_id}
            )
            if response.status_code < 300:
                created_ids.append(_deal_of(response.json())["id"])
            return response

        def delete(i: int) -> httpx.Response:
            # Deletes only the deals this probe created, one per request.
            return http.delete(f"/api/deals/{created_ids[i]}")

        run("GET /api/stages", lambda i: http.get("/api/stages"))
        run("GET /api/owners", lambda i: http.get("/api/owners"))
        run("GET /api/companies", lambda i: http.get("/api/companies"))
        run("GET /api/deals", lambda i: http.get("/api/deals"))
        run("GET /api/deals/{id}", lambda i: http.get(f"/api/deals/{deal_id}"))
        run("GET /api/deals/pipeline-stats", lambda i: http.get("/api/deals/pipeline-stats"))
        run("POST /api/deals", create)

        def read_back(counts: EndpointCounts, field_name: str, expected: str) -> None:
            # Not counted as the endpoint's own: the read that a client makes next.
            seen = _deal_of(http.get(f"/api/deals/{deal_id}").json()).get(field_name)
            if seen != expected:
                counts.stale_reads += 1

        def patch(i: int) -> httpx.Response:
            description = f"probe {i}"
            response = http.patch(f"/api/deals/{deal_id}", json={"description": description})
            read_back(results_by_name["PATCH /api/deals/{id}"], "description", description)
            return response

        def move(i: int) -> httpx.Response:
            stage = stages[i % len(stages)]["id"]
            response = http.post(f"/api/deals/{deal_id}/move", json={"stage_id": stage})
            read_back(results_by_name["POST /api/deals/{id}/move"], "stage_id", stage)
            return response

        run("PATCH /api/deals/{id}", patch)
        run("POST /api/deals/{id}/move", move)
        run(
            "POST /api/deals/bulk",
            lambda i: http.post(
                "/api/deals/bulk",
                json={
                    "operation": "update_stage",
                    "deal_ids": [deal_id],
                    "stage_id": stages[(i + 1) % len(stages)]["id"],
                },
            ),
        )
        if len(created_ids) == repeats:
            run("DELETE /api/deals/{id}", delete)
    return results


def _deal_of(body: dict[str, Any]) -> dict[str, Any]:
    """The deal in a create answer: legacy nests it (``{data: {data: deal}}``)."""
    data: dict[str, Any] = body["data"]
    return data["data"] if isinstance(body.get("error"), str) else data


def comparison(results: dict[str, list[EndpointCounts]]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table: a header, and per endpoint each profile's first and steady
    statements and its steady auth lookups."""
    profiles = list(results)
    header = ["endpoint"]
    for profile in profiles:
        header += [f"{profile} first", f"{profile} steady", f"{profile} auth"]
    by_profile = {p: {c.endpoint: c for c in counts} for p, counts in results.items()}
    rows = []
    for endpoint in [c.endpoint for c in results[profiles[0]]]:
        cells = [endpoint]
        for profile in profiles:
            c = by_profile[profile][endpoint]
            cells += [str(c.first_queries), f"{c.steady_queries:g}", f"{c.steady_auth_lookups:g}"]
        rows.append(cells)
    return header, rows


def markdown_table(results: dict[str, list[EndpointCounts]]) -> str:
    """:func:`comparison` as a Markdown table (the README's statements table)."""
    header, rows = comparison(results)
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def as_rows(results: list[EndpointCounts]) -> list[dict[str, Any]]:
    """Plain rows for a results file or a table."""
    return [
        {
            "endpoint": r.endpoint,
            "statuses": sorted(set(r.statuses)),
            "first_queries": r.first_queries,
            "steady_queries": r.steady_queries,
            "steady_auth_lookups": r.steady_auth_lookups,
            "requests": len(r.queries),
        }
        for r in results
    ]


async def probe_profiles(
    settings: Settings, profiles: Sequence[str], *, repeats: int, log: workflow.StepLog
) -> dict[str, list[EndpointCounts]]:
    """Seed one database (``settings``' backend), then for each profile in turn start the
    edge and the service on it, probe them and stop them; return the counts by profile."""
    from sixty_core.harness.servers import Supervisor

    results: dict[str, list[EndpointCounts]] = {}
    async with workflow.seeded_database(settings, log=log) as (database, report):
        owner = next(o for o in report.owners if not o.is_admin)
        for profile in profiles:
            supervisor = Supervisor(database.dsn, profile, time_scale=settings.time_scale)
            with log.step(f"probe {profile}"):
                await asyncio.to_thread(supervisor.start)
                try:
                    results[profile] = await asyncio.to_thread(
                        probe, supervisor.service_url, owner.token, owner.id, repeats=repeats
                    )
                finally:
                    await asyncio.to_thread(supervisor.stop)
    return results
