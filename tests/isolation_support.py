"""The machinery behind the isolation model (tests/test_isolation_model.py): its constants and
strategies, the tally of a run, the driver that hands requests from the machine's worker thread
to the test's event loop, the model's helpers (requests, expectations, the stream probe and the
checks its rules and invariants share) and the coverage check."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from sixty_core.db.seed import SeedOwner
from tests.api_support import Api

T = TypeVar("T")


#: Every request a rule makes, and the whole stream probe, must finish within this.
CALL_TIMEOUT_S = 30.0
STREAM_WAIT_S = 10.0
#: The fields a deal answer must carry exactly as the model predicts.
TRACKED = (
    "name",
    "company",
    "owner_id",
    "stage_id",
    "status",
    "probability",
    "one_off_revenue",
    "monthly_mrr",
    "value",
    "annual_value",
    "version",
)
OWNERS = (1, 2)  # A and B: seeded non-admin owners
STATUSES = ("active", "won", "lost")

labels = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
money = st.integers(min_value=0, max_value=50_000)
new_deals = st.fixed_dictionaries(
    {
        "name": labels,
        "company": labels,
        "stage_id": st.integers(0, 4),  # an index into the stages
        "status": st.sampled_from(STATUSES),
        "one_off_revenue": money,
        "monthly_mrr": st.integers(min_value=0, max_value=5_000),
    }
)
changes = st.fixed_dictionaries(
    {},
    optional={
        "name": labels,
        "company": labels,
        "status": st.sampled_from(STATUSES),
        "probability": st.integers(min_value=0, max_value=100),
        "one_off_revenue": money,
        "monthly_mrr": st.integers(min_value=0, max_value=5_000),
        "description": labels,
    },
).filter(bool)


@dataclass
class Tally:
    """What one run did, across examples: the report's figures and the coverage check."""

    examples: int = 0
    steps: int = 0
    requests: int = 0
    stale_reads: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    refusals: Counter[int] = field(default_factory=Counter)
    stream_events: int = 0


@dataclass
class Driver:
    """The bridge from the machine's thread to the running API on the test's loop."""

    api: Api
    loop: asyncio.AbstractEventLoop
    stages: list[str]
    decoys: dict[int, str]
    tally: Tally = field(default_factory=Tally)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = CALL_TIMEOUT_S) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, method: str, path: str, who: SeedOwner, **kwargs: Any) -> httpx.Response:
        self.tally.requests += 1
        return self.run(self.api.call(method, path, who, **kwargs))


async def prepare(api: Api) -> Driver:
    """A driver for ``api``: the stage ids and one seeded decoy deal per owner."""
    stages = (await api.call("GET", "/api/stages", api.user(1))).json()["data"]
    decoys = {i: (await api.own_deal(api.user(i)))["id"] for i in OWNERS}
    return Driver(api, asyncio.get_running_loop(), [s["id"] for s in stages], decoys)


def other(index: int) -> int:
    return 3 - index


class ModelHelpers:
    """The helpers of :class:`~tests.test_isolation_model.IsolationModel`: its requests, its
    expectations and the checks its rules and invariants share."""

    driver: ClassVar[Driver]
    marker: str
    live: dict[str, dict[str, Any]]
    gone: dict[str, int]
    owner_of: dict[str, int]
    stale: list[str]
    baseline: dict[int, Counter[tuple[str, str]]]

    # helpers ----------------------------------------------------------------------------

    @property
    def api(self) -> Api:
        return self.driver.api

    def who(self, index: int) -> SeedOwner:
        return self.api.admin if index == 0 else self.api.user(index)

    def mine(self, index: int) -> list[str]:
        """The owner's live deals in creation order (draws from it, unlike from sorted
        uuids, replay the same sequence in a derandomized run)."""
        return [d for d in self.live if self.owner_of[d] == index]

    def ids_of(self, index: int) -> set[str]:
        return set(self.mine(index))

    def _count(self, name: str) -> None:
        self.driver.tally.rules[name] += 1
        self.driver.tally.steps += 1

    def _ok(self, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        return response.json()["data"]

    def _compare(self, where: str, deal: dict[str, Any]) -> None:
        """Count a stale read when ``deal`` differs from the model in a tracked field."""
        expected = self.live[deal["id"]]
        wrong = {k: (deal.get(k), v) for k, v in expected.items() if deal.get(k) != v}
        if wrong:
            self._stale_read(f"{where} {deal['id']}: (got, expected) {wrong}")

    def _stale_read(self, what: str) -> None:
        self.driver.tally.stale_reads += 1
        self.stale.append(what)

    def _check_fresh(self) -> None:
        assert not self.stale, "stale reads: " + "; ".join(self.stale)

    def _check_listing(self, where: str, owner: int, rows: list[Any], expected: set[str]) -> None:
        """A listing of ``owner``'s deals: a row of anyone else's is a leak; a missing,
        extra or outdated own deal is a stale read."""
        leaked = [r["id"] for r in rows if r["owner_id"] != self.who(owner).id]
        assert not leaked, f"{where}: rows of another owner {leaked}"
        listed = {r["id"] for r in rows}
        if listed != expected:
            extra, missed = sorted(listed - expected), sorted(expected - listed)
            self._stale_read(f"{where}: listed {extra} that should not be, missed {missed}")
        for row in rows:
            if row["id"] in self.live:
                self._compare(where, row)

    def _refused(self, response: httpx.Response, victim: str) -> None:
        """Another owner's attempt: 403 or 404, no data, nothing of the deal but its id."""
        self.driver.tally.refusals[response.status_code] += 1
        assert response.status_code in (403, 404), response.text
        assert response.json()["data"] is None
        if victim in self.live:
            assert self.live[victim]["name"] not in response.text

    def _listed(self, index: int, query: str) -> list[dict[str, Any]]:
        """Every page of ``GET /api/deals?query`` as ``index``, following the cursor."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(200):
            body = self.driver.call("GET", f"/api/deals?{query}{cursor}", self.who(index))
            assert body.status_code == 200, body.text
            rows += body.json()["data"]
            if body.json()["next_cursor"] is None:
                return rows
            cursor = f"&cursor={body.json()['next_cursor']}"
        raise AssertionError(f"the listing {query!r} did not end within 200 pages")

    def _stats(self, caller: int, owner: int) -> dict[str, Any]:
        path = f"/api/deals/pipeline-stats?owner_id={self.who(owner).id}"
        return dict(self._ok(self.driver.call("GET", path, self.who(caller))))

    @staticmethod
    def _stage_counts(stats: dict[str, Any]) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for stage in stats["stages"]:
            for kind in ("deal", *STATUSES):
                counts[stage["stage_id"], kind] = int(stage[f"{kind}_count"])
        return +counts

    def _expected_counts(self, owner: int) -> Counter[tuple[str, str]]:
        """The owner's pipeline counts: the example's start plus the model's live deals."""
        expected = self.baseline[owner].copy()
        for deal_id in self.ids_of(owner):
            deal = self.live[deal_id]
            expected[deal["stage_id"], "deal"] += 1
            expected[deal["stage_id"], deal["status"]] += 1
        return +expected

    def _expect(self, deal_id: str, fields: dict[str, Any], bump: bool = True) -> None:
        expected = self.live[deal_id]
        expected.update({k: v for k, v in fields.items() if k in TRACKED})
        expected["value"] = expected["one_off_revenue"] + 3 * expected["monthly_mrr"]
        expected["annual_value"] = expected["one_off_revenue"] + 12 * expected["monthly_mrr"]
        expected["version"] += bump

    # stream probe -----------------------------------------------------------------------

    async def _stream_probe(self, watcher: int) -> list[dict[str, Any]]:
        """Open the watcher's stream, change the other's decoy then the watcher's; the
        stream's events up to the watcher's decoy."""
        api, who = self.api, self.who(watcher)
        events: list[dict[str, Any]] = []
        async with (
            asyncio.timeout(STREAM_WAIT_S),
            api.http.stream("GET", "/api/deals/stream", headers=api.auth(who)) as response,
        ):
            assert response.status_code == 200, await response.aread()
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            for index in (other(watcher), watcher):
                path, body = f"/api/deals/{self.driver.decoys[index]}", {"description": self.marker}
                self.driver.tally.requests += 1
                assert (
                    await api.call("PATCH", path, self.who(index), json=body)
                ).status_code == 200
            async for line in lines:
                if line.startswith("data:"):
                    events.append(json.loads(line.removeprefix("data:")))
                    if events[-1]["id"] == self.driver.decoys[watcher]:
                        break
        self.driver.tally.requests += 1
        return events


def run_settings(examples: int, steps: int, **extra: Any) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **extra,
    )


#: Every rule, by the name it counts itself under.
COUNTED = {
    "create",
    "create_for_the_other_owner",
    "update",
    "move",
    "delete",
    "bulk",
    "intrude",
    "mass_assign_owner",
    "list_filtered",
    "ask_for_the_other_owners_rows",
    "admin_reads_an_owner",
    "stream",
}


def check_coverage(tally: Tally, *, every_rule: bool) -> None:
    """Cross-owner attempts were made and all refused, nothing read stale, and (for a
    derandomized run, where it cannot flake) every rule ran."""
    print(f"isolation model: {tally}")
    assert tally.stale_reads == 0
    assert tally.refusals[404] > 0 and set(tally.refusals) <= {403, 404}, tally.refusals
    if every_rule:
        assert set(tally.rules) == COUNTED, COUNTED - set(tally.rules)
        assert tally.refusals[403] > 0 and tally.stream_events > 0
