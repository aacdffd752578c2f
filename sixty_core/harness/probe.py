"""Queries and auth lookups per request, per endpoint, from a running service.

Sends each endpoint's request ``repeats`` times as one non-admin seeded owner and reads the
``X-Sixty-Queries`` / ``X-Sixty-Auth-Lookups`` headers of every answer. The first request
shows the cold cost (empty caches), the later ones the steady state. Writes are made on a
deal the probe creates itself, so probing changes no seeded row. These counts are
deterministic for a given profile, which makes them a metric a CI gate can trust.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sixty_core.errors import SixtyError

DEFAULT_REPEATS = 5


@dataclass
class EndpointCounts:
    """Counts seen for one endpoint: one entry per request, in order."""

    endpoint: str
    statuses: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    auth_lookups: list[int] = field(default_factory=list)

    @property
    def first_queries(self) -> int:
        return self.queries[0]

    @property
    def steady_queries(self) -> float:
        """Mean queries of the requests after the first (the first when only one)."""
        rest = self.queries[1:] or self.queries
        return statistics.fmean(rest)

    @property
    def steady_auth_lookups(self) -> float:
        rest = self.auth_lookups[1:] or self.auth_lookups
        return statistics.fmean(rest)


def _record(counts: EndpointCounts, response: httpx.Response) -> None:
    counts.statuses.append(response.status_code)
    counts.queries.append(int(response.headers.get("x-sixty-queries", "-1")))
    counts.auth_lookups.append(int(response.headers.get("x-sixty-auth-lookups", "-1")))


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

        def run(endpoint: str, call: Callable[[int], httpx.Response]) -> None:
            counts = EndpointCounts(endpoint)
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
        run(
            "PATCH /api/deals/{id}",
            lambda i: http.patch(f"/api/deals/{deal_id}", json={"description": f"probe {i}"}),
        )
        run(
            "POST /api/deals/{id}/move",
            lambda i: http.post(
                f"/api/deals/{deal_id}/move", json={"stage_id": stages[i % len(stages)]["id"]}
            ),
        )
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
