"""Tenant isolation and read-your-writes as a model: a hypothesis state machine drives the
real running API as two owners (A, B) and an admin, and after every step compares the API
with a dict of the deals each owner created (RELIABILITY.md I7, C1, C7, I4; guarantees 8
and 12).

The machine runs in a worker thread; each rule hands its requests to the test's event loop
(where the server runs, in-process) with ``run_coroutine_threadsafe`` and waits a bounded
time, so the loop never blocks. Deals carry a marker unique to the example, so a search for
it lists exactly this example's deals; the seeded deals stay untouched except one decoy
per owner whose description the stream probe changes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sixty_core.db.repository import Repository
from sixty_core.db.seed import SeedOwner
from tests.api_support import Api, api_fixture

T = TypeVar("T")

fast_api = api_fixture("fast_api", ["optimized"])
slow_api = api_fixture("slow_api", ["legacy", "optimized"])

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


class IsolationModel(RuleBasedStateMachine):
    """The model: ``live`` maps each deal created in this example to the tracked values
    its last acknowledged write must show; ``gone`` holds deleted deals, ``owner_of``
    every deal's owner (1 = A, 2 = B; 0 is the admin)."""

    driver: ClassVar[Driver]

    def __init__(self) -> None:
        super().__init__()
        self.marker = f"iso{uuid.uuid4().hex[:10]}"
        self.live: dict[str, dict[str, Any]] = {}
        self.gone: dict[str, int] = {}
        self.owner_of: dict[str, int] = {}
        self.stale: list[str] = []
        self.driver.tally.examples += 1
        self.baseline = {i: self._stage_counts(self._stats(i, i)) for i in OWNERS}

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

    # rules ------------------------------------------------------------------------------

    @initialize(a=new_deals, b=new_deals)
    def one_deal_each(self, a: dict[str, Any], b: dict[str, Any]) -> None:
        """Every example starts with a deal of A's and one of B's."""
        self._create(1, a)
        self._create(2, b)

    @rule(owner=st.sampled_from(OWNERS), spec=new_deals)
    def create(self, owner: int, spec: dict[str, Any]) -> None:
        self._count("create")
        self._create(owner, spec)

    def _create(self, owner: int, spec: dict[str, Any]) -> None:
        body = {
            **spec,
            "name": f"{self.marker} {spec['name']}",
            "owner_id": self.who(owner).id,
            "stage_id": self.driver.stages[spec["stage_id"]],
        }
        answer = self._ok(self.driver.call("POST", "/api/deals", self.who(owner), json=body), 201)
        deal = answer if "robust_create" in self.api.profile.flags else answer["data"]
        fields = {k: v for k, v in body.items() if k in TRACKED}
        self.live[deal["id"]] = {**fields, "probability": deal["probability"], "version": 1}
        self.owner_of[deal["id"]] = owner
        self._expect(deal["id"], {}, bump=False)
        self._compare("create answer", deal)

    @rule(owner=st.sampled_from(OWNERS), label=labels)
    def create_for_the_other_owner(self, owner: int, label: str) -> None:
        """Creating a deal owned by someone else is forbidden (the invariant sees no row)."""
        self._count("create_for_the_other_owner")
        body = {
            "name": f"{self.marker} {label}",
            "company": "c",
            "owner_id": self.who(other(owner)).id,
        }
        response = self.driver.call("POST", "/api/deals", self.who(owner), json=body)
        assert response.status_code == 403, response.text

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), change=changes, version=st.sampled_from(["none", "current", "stale"]))
    def update(self, data: st.DataObject, change: dict[str, Any], version: str) -> None:
        self._count("update")
        deal_id = data.draw(st.sampled_from(list(self.live)))
        body = dict(change)
        if "name" in body:
            body["name"] = f"{self.marker} {body['name']}"
        current = self.live[deal_id]["version"]
        if version != "none":
            body["version"] = current if version == "current" else current + 1
        owner = self.who(self.owner_of[deal_id])
        response = self.driver.call("PATCH", f"/api/deals/{deal_id}", owner, json=body)
        if version == "stale":
            assert response.status_code == 409, response.text
            return
        self._expect(deal_id, body)
        self._compare("patch answer", self._ok(response))

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), stage=st.integers(0, 4), admin=st.booleans())
    def move(self, data: st.DataObject, stage: int, admin: bool) -> None:
        """The owner, or the admin, moves a deal to a stage."""
        self._count("move")
        deal_id = data.draw(st.sampled_from(list(self.live)))
        who = self.api.admin if admin else self.who(self.owner_of[deal_id])
        body = {"stage_id": self.driver.stages[stage]}
        response = self.driver.call("POST", f"/api/deals/{deal_id}/move", who, json=body)
        self._expect(deal_id, body)
        self._compare("move answer", self._ok(response))

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        self._count("delete")
        deal_id = data.draw(st.sampled_from(list(self.live)))
        owner = self.who(self.owner_of[deal_id])
        answer = self._ok(self.driver.call("DELETE", f"/api/deals/{deal_id}", owner))
        assert answer == {"id": deal_id}
        del self.live[deal_id]
        self.gone[deal_id] = self.owner_of[deal_id]

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), stage=st.integers(0, 4), delete=st.booleans())
    def bulk(self, data: st.DataObject, stage: int, delete: bool) -> None:
        """An owner's bulk stage update or delete over some of their own deals."""
        self._count("bulk")
        index = self.owner_of[data.draw(st.sampled_from(list(self.live)))]
        chosen = data.draw(st.sets(st.sampled_from(self.mine(index)), min_size=1))
        body: dict[str, Any] = {"operation": "delete" if delete else "update_stage"}
        body |= {"deal_ids": sorted(chosen), "stage_id": self.driver.stages[stage]}
        response = self.driver.call("POST", "/api/deals/bulk", self.who(index), json=body)
        assert self._ok(response)["affected_deals"] == len(chosen)
        for deal_id in chosen:
            if delete:
                del self.live[deal_id]
                self.gone[deal_id] = index
            else:
                self._expect(deal_id, {"stage_id": body["stage_id"]})

    @precondition(lambda self: bool(self.owner_of))
    @rule(data=st.data(), stage=st.integers(0, 4))
    def intrude(self, data: st.DataObject, stage: int) -> None:
        """The other owner tries every id-taking endpoint on a deal (live or deleted):
        GET, PATCH, move, DELETE and a bulk that mixes in their own deals."""
        self._count("intrude")
        victim = data.draw(st.sampled_from(list(self.owner_of)))
        attacker = other(self.owner_of[victim])
        who, path = self.who(attacker), f"/api/deals/{victim}"
        stage_id = self.driver.stages[stage]
        for method, suffix, body in (
            ("GET", "", None),
            ("PATCH", "", {"name": f"{self.marker} stolen"}),
            ("POST", "/move", {"stage_id": stage_id}),
            ("DELETE", "", None),
        ):
            self._refused(self.driver.call(method, path + suffix, who, json=body), victim)
        ids = [*self.mine(attacker)[:3], victim]
        for operation in ("delete", "update_stage"):
            bulk = {"operation": operation, "deal_ids": ids, "stage_id": stage_id}
            response = self.driver.call("POST", "/api/deals/bulk", who, json=bulk)
            self._refused(response, victim)

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data(), with_name=st.booleans())
    def mass_assign_owner(self, data: st.DataObject, with_name: bool) -> None:
        """A PATCH that sets owner_id to the other owner is refused whole (400: owner_id
        is not an updatable field), even beside a legitimate change."""
        self._count("mass_assign_owner")
        deal_id = data.draw(st.sampled_from(list(self.live)))
        index = self.owner_of[deal_id]
        body = {"owner_id": self.who(other(index)).id}
        if with_name:
            body["name"] = f"{self.marker} hijacked"
        response = self.driver.call("PATCH", f"/api/deals/{deal_id}", self.who(index), json=body)
        assert response.status_code == 400, response.text
        assert "owner_id" in response.json()["error"]["message"]

    @rule(
        owner=st.sampled_from(OWNERS),
        status=st.none() | st.sampled_from(STATUSES),
        stage=st.none() | st.integers(0, 4),
        sort=st.sampled_from(["created_at", "updated_at", "value", "name"]),
        order=st.sampled_from(["asc", "desc"]),
        limit=st.integers(1, 4),
        own_filter=st.booleans(),
    )
    def list_filtered(
        self,
        owner: int,
        status: str | None,
        stage: int | None,
        sort: str,
        order: str,
        limit: int,
        own_filter: bool,
    ) -> None:
        """A filtered, sorted, paged listing holds exactly the model's matching deals."""
        self._count("list_filtered")
        query = f"search={self.marker}&sort={sort}&order={order}&limit={limit}"
        if status is not None:
            query += f"&status={status}"
        stage_id = None if stage is None else self.driver.stages[stage]
        query += "" if stage_id is None else f"&stage_id={stage_id}"
        query += f"&owner_id={self.who(owner).id}" if own_filter else ""
        rows = self._listed(owner, query)
        expected = {
            d
            for d in self.ids_of(owner)
            if status in (None, self.live[d]["status"])
            and stage_id in (None, self.live[d]["stage_id"])
        }
        self._check_listing(f"list {query}", owner, rows, expected)
        self._check_fresh()
        if sort == "value" and "bounded_lists" in self.api.profile.flags:
            values = [r["value"] for r in rows]
            assert values == sorted(values, reverse=order == "desc")

    @rule(owner=st.sampled_from(OWNERS))
    def ask_for_the_other_owners_rows(self, owner: int) -> None:
        """Filtering the list or the pipeline by the other owner is forbidden."""
        self._count("ask_for_the_other_owners_rows")
        victim = self.who(other(owner)).id
        for path in (
            f"/api/deals?owner_id={victim}",
            f"/api/deals/pipeline-stats?owner_id={victim}",
        ):
            response = self.driver.call("GET", path, self.who(owner))
            self.driver.tally.refusals[response.status_code] += 1
            assert response.status_code == 403, response.text
            assert response.json()["data"] is None

    @rule(owner=st.sampled_from(OWNERS))
    def admin_reads_an_owner(self, owner: int) -> None:
        """The admin, filtering by an owner, lists exactly that owner's deals, reads each as
        the model has it, and counts them in the owner's pipeline."""
        self._count("admin_reads_an_owner")
        query = f"search={self.marker}&owner_id={self.who(owner).id}&limit=500"
        self._check_listing("admin list", owner, self._listed(0, query), self.ids_of(owner))
        for deal_id in self.ids_of(owner):
            response = self.driver.call("GET", f"/api/deals/{deal_id}", self.api.admin)
            self._compare("admin get", self._ok(response))
        got = self._stage_counts(self._stats(0, owner))
        if got != self._expected_counts(owner):
            self._stale_read(f"admin pipeline of {owner}: {got} != {self._expected_counts(owner)}")
        self._check_fresh()

    @rule(watcher=st.sampled_from(OWNERS))
    def stream(self, watcher: int) -> None:
        """An owner's event stream skips the other owner's change made first and delivers
        their own made after it (NOTIFY keeps commit order: a leak would arrive first)."""
        self._count("stream")
        events = self.driver.run(self._stream_probe(watcher), STREAM_WAIT_S + 5)
        self.driver.tally.stream_events += len(events)
        foreign = self.ids_of(other(watcher)) | {self.driver.decoys[other(watcher)]}
        assert events and events[-1]["id"] == self.driver.decoys[watcher], events
        assert {e["owner_id"] for e in events} == {self.who(watcher).id}, events
        assert not foreign & {e["id"] for e in events}, events

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

    # invariants -------------------------------------------------------------------------

    @invariant()
    def lists_hold_exactly_the_owners_deals(self) -> None:
        """Each owner's marker listing is exactly their live deals, with the model's values;
        their plain first page holds only their own deals."""
        for index in OWNERS:
            rows = self._listed(index, f"search={self.marker}&limit=500")
            self._check_listing("list", index, rows, self.ids_of(index))
            page = self._listed(index, "limit=500")
            assert {r["owner_id"] for r in page} == {self.who(index).id}
            assert not {r["id"] for r in page} & set(self.owner_of) - self.ids_of(index)
        self._check_fresh()

    @invariant()
    def reads_agree_with_the_model_and_never_cross_owners(self) -> None:
        """The owner reads each live deal as the model has it; the other owner gets a 404
        with no data; a deleted deal is a 404 to its owner."""
        for deal_id, index in self.owner_of.items():
            path = f"/api/deals/{deal_id}"
            response = self.driver.call("GET", path, self.who(index))
            if deal_id in self.gone:
                if response.status_code != 404:
                    self._stale_read(f"get {deal_id} after delete: {response.status_code}")
                continue
            self._compare("get", self._ok(response))
            self._refused(self.driver.call("GET", path, self.who(other(index))), deal_id)
        self._check_fresh()

    @invariant()
    def pipeline_counts_the_models_deals(self) -> None:
        """Each owner's pipeline-stats count, per stage and status, the seeded deals plus
        exactly the model's live deals."""
        for index in OWNERS:
            got = self._stage_counts(self._stats(index, index))
            if got != self._expected_counts(index):
                self._stale_read(f"pipeline of {index}: {got} != {self._expected_counts(index)}")
        self._check_fresh()


def bound_to(driver: Driver) -> type[IsolationModel]:
    """The model, driving ``driver``'s API."""
    return type("IsolationModelRun", (IsolationModel,), {"driver": driver})


def run_settings(examples: int, steps: int, **extra: Any) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        **extra,
    )


async def drive(api: Api, config: settings) -> Tally:
    """Run the model against ``api`` in a worker thread; the tally of what it did."""
    driver = await prepare(api)
    await asyncio.to_thread(run_state_machine_as_test, bound_to(driver), settings=config)
    return driver.tally


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


async def test_owners_stay_isolated_and_read_their_writes(fast_api: Api) -> None:
    """Two owners and an admin create, read, change, move, delete, list, bulk-edit, ask
    for stats and watch the stream: no one sees or changes another's deal, and every read
    returns the last acknowledged write (optimized profile, a few examples)."""
    # Derandomized: the same rule sequences every run, so the coverage check cannot flake;
    # the slow variant explores at random.
    tally = await drive(fast_api, run_settings(12, 25, derandomize=True, database=None))
    check_coverage(tally, every_rule=True)


@pytest.mark.slow
async def test_owners_stay_isolated_over_longer_runs(slow_api: Api) -> None:
    """The same model, more and longer runs, in both base profiles."""
    tally = await drive(slow_api, run_settings(15, 30))
    check_coverage(tally, every_rule=False)


ORIGINAL_GET_DEAL = Repository.get_deal


async def leaky_get_deal(self: Repository, deal_id: uuid.UUID, visible_to: uuid.UUID | None) -> Any:
    """A BOLA bug: the owner filter forgotten on a single-deal read."""
    return await ORIGINAL_GET_DEAL(self, deal_id, None)


@pytest.mark.parametrize(
    ("fault", "replacement", "symptom"),
    [
        ("get_deal", leaky_get_deal, "assert 200 in (403, 404)"),
        ("invalidate", lambda self, tags: None, "stale reads:"),
    ],
    ids=["bola", "stale_cache"],
)
async def test_the_model_catches_a_leak_and_a_stale_read(
    fast_api: Api, monkeypatch: pytest.MonkeyPatch, fault: str, replacement: Any, symptom: str
) -> None:
    """The machine's invariants fail on a deliberately broken service: a read that skips
    the owner filter, and writes that never invalidate the query cache."""
    monkeypatch.setattr(Repository, fault, replacement)
    config = run_settings(
        10, 20, derandomize=True, database=None, phases=[Phase.generate], report_multiple_bugs=False
    )
    with pytest.raises(AssertionError) as caught:
        await drive(fast_api, config)
    assert symptom in str(caught.value), caught.value
