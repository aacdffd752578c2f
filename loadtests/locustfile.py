"""Locust scenarios for the deal service: sales reps, managers and feed viewers, with the
client behaviour of the profile under test, contract checks on every step and raw samples.

Run it plain (defaults in ``locust.conf``; the web UI works too)::

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000

or through ``sixty load``, which starts the service, runs this headless (with worker
processes if asked), probes the service while it runs and writes ``load.json``.

HTTP only: Locust patches the process with gevent on import, so nothing here runs asyncio.

**Clients.** ``--sixty-client legacy`` does what the original ``useDeals`` hook did
(ORIGINAL_SYSTEM.md §2.1): every page load fetches deals and stages, the pipeline fetches
all deals and then the owner's, stages are fetched twice, every write is followed by a
full unbounded refetch, and a create whose response breaks the contract (``error`` set)
is followed by a fallback insert, which creates a duplicate. The hook's extra session
checks are not sent as requests: the legacy service already makes two session lookups on
every request for them (README, profiles), and sending more would count them twice.
``--sixty-client optimized`` does what ``useDealsOptimized`` intended (§3.1): deals and
stages cached per browser session (5 min and 30 min), invalidated by the session's own
writes, bounded pages, an ``Idempotency-Key`` on create and one retry after a failed
write. ``auto`` (the default) asks the service's ``/metrics`` for its profile.

**Samples.** Every request (and every create as the user saw it, request type
``ACTION``) is appended to ``<samples dir>/samples-<host>-<pid>.jsonl``
(:mod:`sixty_core.load.samples`); percentiles come from these, never from Locust's rounded
figures. Tokens come from the seed's derivation (:mod:`sixty_core.tokens`), never from
the database.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from shapes import SixtyShape  # noqa: F401  (Locust picks the shape class up from here)

from sixty_core.db.seed import SeedOwner, seeded_owners
from sixty_core.load import contract
from sixty_core.load.probes import sixty_series
from sixty_core.load.samples import ACTION, Sample, SampleWriter
from sixty_core.load.scenario import CLIENTS, SCENARIOS, STANDARD, Scenario, client_for_profile
from sixty_core.load.shapes import SHAPES

#: Stale after these (ORIGINAL_SYSTEM.md §3.1, "Keys and TTLs").
DEALS_TTL_S = 300.0
STAGES_TTL_S = 1800.0
#: The apiCall write policy (§2.1 "Mutations", §3.1 "Writes"): one retry after 1 s, and
#: the legacy fetchWithRetry also waits 2 s after the last failed attempt.
WRITE_RETRY_WAIT_S = 1.0
LEGACY_LAST_WAIT_S = 2.0
#: Pages an optimized client follows to show a whole pipeline (500 deals each).
MAX_PAGES = 10


def _scenario() -> Scenario:
    """The scenario this process runs: ``SIXTY_LOAD_SCENARIO`` (a name or JSON), or the
    standard one. Read at import: Locust reads weights and wait times from the classes."""
    raw = os.environ.get("SIXTY_LOAD_SCENARIO", "").strip()
    if not raw:
        return STANDARD
    if raw in SCENARIOS:
        return SCENARIOS[raw]
    return Scenario.from_json(raw)


SCENARIO = _scenario()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("sixty")
    group.add_argument(
        "--sixty-client",
        choices=("auto", *CLIENTS),
        default="auto",
        env_var="SIXTY_LOAD_CLIENT",
        help="client behaviour: legacy (useDeals), optimized (useDealsOptimized), or auto "
        "(ask the service's /metrics for its profile)",
    )
    group.add_argument(
        "--sixty-shape",
        choices=SHAPES,
        default="steady",
        env_var="SIXTY_LOAD_SHAPE",
        help="load shape (see loadtests/shapes.py)",
    )
    group.add_argument(
        "--sixty-steps",
        default="",
        env_var="SIXTY_LOAD_STEPS",
        help="user counts of the steps shape, e.g. 10,20,50 (each held for an equal share "
        "of the run time)",
    )
    group.add_argument(
        "--sixty-samples-dir",
        default=".sixty/load-samples",
        env_var="SIXTY_LOAD_SAMPLES_DIR",
        help="where each process appends its raw samples",
    )
    group.add_argument(
        "--sixty-seed",
        type=int,
        default=SCENARIO.seed,
        env_var="SIXTY_LOAD_SEED",
        help="seed the service's data was made with (tokens derive from it)",
    )
    group.add_argument(
        "--sixty-seed-scale",
        type=int,
        default=SCENARIO.seed_scale,
        env_var="SIXTY_LOAD_SEED_SCALE",
        help="seed scale of the service's data (how many owners have tokens)",
    )
    group.add_argument(
        "--sixty-run-id",
        default=time.strftime("%Y%m%dT%H%M%S"),
        env_var="SIXTY_LOAD_RUN_ID",
        help="tag in the names of the deals this run creates (duplicates are counted by it)",
    )


class _Process:
    """What one Locust process shares between its users: the sample writer, the seeded
    owners, the resolved client behaviour and a counter for owner assignment."""

    def __init__(self) -> None:
        self.writer: SampleWriter | None = None
        self.owners: list[SeedOwner] = []
        self.client: str | None = None
        self.run_id = ""
        self.tag = f"{socket.gethostname()}.{os.getpid()}"
        self.next_rep = itertools.count()
        self.next_viewer = itertools.count()
        self.next_name = itertools.count(1)
        self.lock = Semaphore()


PROCESS = _Process()


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    PROCESS.writer = SampleWriter(Path(options.sixty_samples_dir))
    PROCESS.owners = seeded_owners(options.sixty_seed_scale, options.sixty_seed)
    PROCESS.run_id = options.sixty_run_id
    if options.sixty_client != "auto":
        PROCESS.client = options.sixty_client


@events.request.add_listener
def _record(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any = None,
    context: dict[str, Any] | None = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    if PROCESS.writer is None:
        return
    context = context or {}
    status = int(getattr(response, "status_code", 0) or 0)
    PROCESS.writer.write(
        Sample(
            t=start_time if start_time is not None else time.time() - response_time / 1000,
            kind=request_type,
            name=name,
            ms=float(response_time),
            ok=exception is None,
            status=status,
            bytes=int(response_length or 0),
            reason=None if exception is None else _reason(exception),
            user=str(context.get("user", "")),
            created=int(context.get("created", 0)),
        )
    )


def _reason(exception: BaseException) -> str:
    text = str(exception)
    # catch_response failures carry our reason as their message; anything else is the
    # transport's own exception, named by its class (its text holds addresses and ports).
    if type(exception).__name__ == "CatchResponseError" and text:
        return text
    return f"transport: {type(exception).__name__}"


@events.test_stop.add_listener
def _flush(**_: Any) -> None:
    if PROCESS.writer is not None:
        PROCESS.writer.flush()


@events.quit.add_listener
def _close(**_: Any) -> None:
    if PROCESS.writer is not None:
        PROCESS.writer.close()


def _resolve_client(user: FastHttpUser) -> str:
    """The client behaviour for this process, asking ``/metrics`` once when ``auto`` (with
    urllib, so the question is not itself a sample)."""
    with PROCESS.lock:
        if PROCESS.client is None:
            url = f"{user.host}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    profile = sixty_series(response.read().decode(errors="replace"))[0]
            except (OSError, ValueError) as exc:
                raise StopUser(f"cannot read {url} ({exc}): pass --sixty-client") from None
            if profile is None:
                raise StopUser(f"{url} names no sixty profile: pass --sixty-client")
            PROCESS.client = client_for_profile(profile)
        return PROCESS.client


class _Reply:
    """What a step saw: status, body and whether it kept its contract."""

    __slots__ = ("body", "ok", "status")

    def __init__(self, status: int, body: bytes, ok: bool) -> None:
        self.status, self.body, self.ok = status, body, ok

    @property
    def data(self) -> Any:
        return contract.payload(self.body) if self.ok else None


class _ApiUser(FastHttpUser):
    """A signed-in browser session: a token, a client behaviour, and contract-checked
    steps. Subclasses say who signs in."""

    abstract = True
    wait_time = between(*SCENARIO.think_s)
    # The original's fetch had no timeout: a user waited for the answer. Ours is bounded
    # all the same, above the legacy service's slowest create (two 30 s edge attempts and
    # 3 s of waits at time_scale 1), so the client never cuts short what it measures.
    network_timeout = 120.0
    connection_timeout = 10.0
    owner: SeedOwner

    def context(self) -> dict[str, Any]:
        return {"user": type(self).__name__}

    def pick_owner(self) -> SeedOwner:
        raise NotImplementedError

    def on_start(self) -> None:
        if not PROCESS.owners:
            raise StopUser("no seeded owners: run through Locust's command line")
        self.owner = self.pick_owner()
        self.auth = {"Authorization": f"Bearer {self.owner.token}"}
        self.legacy = _resolve_client(self) == "legacy"
        self.cached: dict[str, tuple[float, Any]] = {}

    # --- steps -----------------------------------------------------------------------

    def step(
        self,
        method: str,
        path: str,
        name: str,
        *,
        expect: tuple[int, ...] = (200,),
        data: contract.DataShape = "any",
        json: Any = None,
        headers: dict[str, str] | None = None,
        lenient_create: bool = False,
    ) -> _Reply:
        """One request, reported as failed with its reason when it breaks the contract.
        ``lenient_create``: the step stands in for a direct insert, which only needs a
        deal id back (the original's fallback insert, ``.select().single()``)."""
        with self.client.request(
            method,
            path,
            name=name,
            json=json,
            headers={**self.auth, **(headers or {})},
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            body = response.content or b""
            if status == 0:
                error = getattr(response, "error", None)
                reason = f"transport: {type(error).__name__ if error else 'no response'}"
            elif lenient_create:
                reason = None
                if status not in expect or contract.deal_id_anywhere(body) is None:
                    reason = contract.check(status, body, expect=expect, data="deal")
            else:
                reason = contract.check(status, body, expect=expect, data=data)
            if reason is None:
                response.success()
            else:
                response.failure(reason)
            return _Reply(status, body, reason is None)

    def action(self, name: str, started: float, ok: bool, reason: str | None, created: int):
        """Report a whole user action (several requests) as one ``ACTION`` sample."""
        self.environment.events.request.fire(
            request_type=ACTION,
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            response=None,
            context={**self.context(), "created": created},
            exception=None if ok else _ActionFailed(reason or "failed"),
            start_time=time.time() - (time.perf_counter() - started),
        )

    def pause(self, seconds: float) -> None:
        """A client-side wait of the original's, scaled like the service's delays."""
        gevent.sleep(seconds * SCENARIO.time_scale)

    def remembered(self, key: str, ttl_s: float) -> Any:
        hit = self.cached.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl_s:
            return hit[1]
        return None

    def remember(self, key: str, value: Any) -> None:
        self.cached[key] = (time.monotonic(), value)

    def forget_deals(self) -> None:
        # useDealsOptimized invalidates ``deals_.*``: every list this session cached.
        for key in [k for k in self.cached if k.startswith("deals_")]:
            del self.cached[key]


class _ActionFailed(Exception):
    pass


class SalesRep(_ApiUser):
    """A non-admin owner working their pipeline."""

    weight = SCENARIO.weights.get("SalesRep", 0)

    def pick_owner(self) -> SeedOwner:
        reps = [o for o in PROCESS.owners if not o.is_admin] or PROCESS.owners
        return reps[next(PROCESS.next_rep) % len(reps)]

    def on_start(self) -> None:
        super().on_start()
        self.deal_ids: list[str] = []
        self.mine: list[str] = []
        self.stages: list[str] = []
        self.open_pipeline()

    # --- what the hooks fetch ---------------------------------------------------------

    def fetch_deals(self, *, refetch: bool = False) -> None:
        """``fetchDeals``: legacy, every visible deal; optimized, the cached list or the
        owner's deals page by page."""
        if self.legacy:
            reply = self.step(
                "GET", f"/api/deals?owner_id={self.owner.id}", "GET /api/deals", data="list"
            )
            self.note_deals(reply.data)
            return
        key = f"deals_{self.owner.id}"
        if not refetch and self.remembered(key, DEALS_TTL_S) is not None:
            return
        rows: list[Any] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            reply = self.step(
                "GET",
                f"/api/deals?owner_id={self.owner.id}&limit=500{cursor}",
                "GET /api/deals",
                data="list",
            )
            if not reply.ok:
                return
            document = contract.decode(reply.body)
            rows.extend(reply.data)
            next_cursor = document.get("next_cursor") if isinstance(document, dict) else None
            if not next_cursor:
                break
            cursor = f"&cursor={next_cursor}"
        self.remember(key, rows)
        self.note_deals(rows)

    def fetch_stages(self) -> None:
        if not self.legacy and self.remembered("deal_stages", STAGES_TTL_S) is not None:
            return
        reply = self.step("GET", "/api/stages", "GET /api/stages", data="list")
        if isinstance(reply.data, list):
            self.stages = [str(s["id"]) for s in reply.data if isinstance(s, dict)]
            if not self.legacy:
                self.remember("deal_stages", self.stages)

    def note_deals(self, rows: Any) -> None:
        if isinstance(rows, list):
            # Only seeded deals: another session of this owner may delete the ones it made.
            self.deal_ids = [
                str(r["id"])
                for r in rows
                if isinstance(r, dict) and not str(r.get("name", "")).startswith("load ")
            ]

    # --- tasks ------------------------------------------------------------------------

    @task(5)
    def open_pipeline(self) -> None:
        if self.legacy:
            # PipelineContext first fetches with no owner (userData not loaded yet), then
            # the owner's deals; its useDeals and useDealStages each fetch the stages.
            self.step("GET", "/api/deals", "GET /api/deals", data="list")
            self.fetch_deals()
            self.fetch_stages()
            self.fetch_stages()
        else:
            self.fetch_deals()
            self.fetch_stages()

    @task(3)
    def open_deal(self) -> None:
        if self.deal_ids:
            deal = random.choice(self.deal_ids)
            self.step("GET", f"/api/deals/{deal}", "GET /api/deals/{id}", data="deal")

    @task(2)
    def move_deal(self) -> None:
        if not (self.deal_ids and self.stages):
            return
        deal, stage = random.choice(self.deal_ids), random.choice(self.stages)
        reply = self.write(
            "POST", f"/api/deals/{deal}/move", "POST /api/deals/{id}/move", {"stage_id": stage}
        )
        if reply.ok:
            self.after_write()

    @task(1)
    def update_deal(self) -> None:
        if not self.deal_ids:
            return
        deal = random.choice(self.deal_ids)
        reply = self.write(
            "PATCH", f"/api/deals/{deal}", "PATCH /api/deals/{id}", {"probability": 50}
        )
        if reply.ok:
            self.after_write()

    @task(1)
    def delete_own_deal(self) -> None:
        if not self.mine:
            return
        deal = self.mine.pop()
        reply = self.write("DELETE", f"/api/deals/{deal}", "DELETE /api/deals/{id}", None)
        if reply.ok:
            self.after_write()

    @task(2)
    def create_deal(self) -> None:
        """The DealWizard: open it (its own hook instance fetches deals and stages), submit,
        and wait for the hook's create to return; timed as one ``ACTION``."""
        self.fetch_deals()
        self.fetch_stages()
        started = time.perf_counter()
        name = f"load {PROCESS.run_id} {PROCESS.tag}-{next(PROCESS.next_name)}"
        body = {
            "name": name,
            "company": "Load Test Ltd",
            "owner_id": self.owner.id,
            "monthly_mrr": 250,
        }
        if self.stages:
            body["stage_id"] = self.stages[0]
        seen: set[str] = set()
        reason = self.legacy_create(body, seen) if self.legacy else self.robust_create(body, seen)
        self.mine.extend(sorted(seen))
        if seen:
            self.after_write()
        self.action("create deal (wizard)", started, bool(seen), reason, len(seen))

    def legacy_create(self, body: dict[str, Any], seen: set[str]) -> str | None:
        """``useDeals.createDeal``: the API, retried once on a failed status, then — on any
        error, a broken contract included — the fallback insert."""
        reply = self.create_attempts(body, headers=None, seen=seen)
        if reply.ok:
            return None
        fallback = self.step(
            "POST",
            "/api/deals",
            "POST /api/deals (fallback insert)",
            expect=(200, 201),
            json=body,
            lenient_create=True,
        )
        if (found := contract.deal_id_anywhere(fallback.body)) is not None:
            seen.add(found)
            return None
        return "the fallback insert returned no deal"

    def robust_create(self, body: dict[str, Any], seen: set[str]) -> str | None:
        """``useDealsOptimized.createDeal`` as intended: one key for every attempt."""
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        reply = self.create_attempts(body, headers=headers, seen=seen)
        return None if reply.ok else "the API did not create the deal"

    def create_attempts(
        self, body: dict[str, Any], *, headers: dict[str, str] | None, seen: set[str]
    ) -> _Reply:
        """``POST /api/deals`` under the write policy; every deal id seen goes in ``seen``."""

        def attempt() -> _Reply:
            reply = self.step(
                "POST",
                "/api/deals",
                "POST /api/deals",
                expect=(201,),
                data="deal",
                json=body,
                headers=headers,
            )
            if (found := contract.deal_id_anywhere(reply.body)) is not None:
                seen.add(found)
            return reply

        return self.with_write_policy(attempt)

    def write(self, method: str, path: str, name: str, json: Any) -> _Reply:
        """An update, move or delete under the write policy; a 404 or 409 (the write was
        refused, not lost) is not retried."""
        return self.with_write_policy(
            lambda: self.step(method, path, name, data="object", json=json), final=(404, 409)
        )

    def with_write_policy(
        self, attempt: Callable[[], _Reply], *, final: tuple[int, ...] = ()
    ) -> _Reply:
        """apiCall's write policy (§2.1 "Mutations", §3.1 "Writes"): one retry after 1 s
        when the status is not OK. A 2xx whose body the client refuses throws without a
        retry; the legacy fetchWithRetry also waits 2 s after the last failed attempt."""
        reply = attempt()
        if reply.ok or 200 <= reply.status < 300 or reply.status in final:
            return reply
        self.pause(WRITE_RETRY_WAIT_S)
        reply = attempt()
        if not reply.ok and self.legacy:
            self.pause(LEGACY_LAST_WAIT_S)
        return reply

    def after_write(self) -> None:
        """Every successful write awaits a full refetch (legacy: unbounded; optimized:
        after invalidating the session's cached lists)."""
        if not self.legacy:
            self.forget_deals()
        self.fetch_deals(refetch=True)


class Manager(_ApiUser):
    """The admin: the whole team's pipeline, its statistics, owners and companies."""

    weight = SCENARIO.weights.get("Manager", 0)

    def pick_owner(self) -> SeedOwner:
        admins = [o for o in PROCESS.owners if o.is_admin] or PROCESS.owners
        return admins[0]

    def view(self) -> None:
        # The legacy hooks fetch the stages on every view; the optimized ones keep them.
        if self.legacy or self.remembered("deal_stages", STAGES_TTL_S) is None:
            reply = self.step("GET", "/api/stages", "GET /api/stages", data="list")
            if reply.ok and not self.legacy:
                self.remember("deal_stages", reply.data)

    @task(3)
    def all_deals(self) -> None:
        self.view()
        if self.legacy:
            self.step("GET", "/api/deals", "GET /api/deals", data="list")
        elif self.remembered("deals_all", DEALS_TTL_S) is None:
            reply = self.step("GET", "/api/deals?limit=50", "GET /api/deals", data="list")
            if reply.ok:
                self.remember("deals_all", reply.data)

    @task(2)
    def pipeline_stats(self) -> None:
        self.view()
        self.step(
            "GET", "/api/deals/pipeline-stats", "GET /api/deals/pipeline-stats", data="object"
        )

    @task(1)
    def owners(self) -> None:
        self.view()
        self.step("GET", "/api/owners", "GET /api/owners", data="list")

    @task(1)
    def companies(self) -> None:
        self.view()
        self.step("GET", "/api/companies", "GET /api/companies", data="list")


class FeedViewer(_ApiUser):
    """Opens the deal change feed, stays a while, leaves: the churn that shows whether
    the service releases what each stream held."""

    weight = SCENARIO.weights.get("FeedViewer", 0)

    def pick_owner(self) -> SeedOwner:
        reps = [o for o in PROCESS.owners if not o.is_admin] or PROCESS.owners
        return reps[next(PROCESS.next_viewer) % len(reps)]

    @task
    def watch(self) -> None:
        with self.client.get(
            "/api/deals/stream",
            name="GET /api/deals/stream",
            headers=self.auth,
            stream=True,
            catch_response=True,
        ) as response:
            status = int(response.status_code or 0)
            if status != 200:
                response.failure(contract.check(status, b"", expect=(200,)) or "no stream")
                return
            first = _read_for(response, 5.0, until=b"\n\n")
            if not first.startswith(b"retry:"):
                response.failure("contract: the stream did not open with its retry frame")
                _abandon(response)
                return
            response.success()
        _read_for(response, random.uniform(*SCENARIO.feed_dwell_s))
        _abandon(response)


def _reweigh(user_class: type[_ApiUser], weights: dict[str, int]) -> None:
    """Give the tasks named in ``weights`` those weights (the scenario's ``task_weights``);
    the others keep their ``@task`` weights. Locust keeps a class's tasks as a list with
    each task repeated by its weight and draws from it at random."""
    if not weights:
        return
    tasks = {t.__name__: t for t in user_class.tasks}
    counts = Counter(t.__name__ for t in user_class.tasks)  # the @task weights
    user_class.tasks = [
        tasks[name] for name, count in counts.items() for _ in range(weights.get(name, count))
    ]


def _reweigh_all() -> None:
    # In a function: Locust takes every User class bound at module level for a user class
    # of its own, so a loop variable left bound to one would be a duplicate.
    for user_class in (SalesRep, Manager, FeedViewer):
        _reweigh(user_class, SCENARIO.task_weights.get(user_class.__name__, {}))


_reweigh_all()


def _read_for(response: Any, seconds: float, until: bytes | None = None) -> bytes:
    """Read the stream for up to ``seconds`` (or until ``until`` arrives)."""
    received = b""
    raw = getattr(response, "_response", None)
    if raw is None:
        return received
    with gevent.Timeout(seconds, False):
        while True:
            # One byte at a time: geventhttpclient's read(n) waits for all n bytes, and a
            # stream's frames are short and far apart.
            chunk = raw.read(1)
            if not chunk:
                break
            received += chunk
            if until is not None and until in received:
                break
    return received


def _abandon(response: Any) -> None:
    """Close the stream's socket, as a browser closing the tab does (the connection must
    not go back to the pool with an endless body on it)."""
    raw = getattr(response, "_response", None)
    sock, pool = getattr(raw, "_sock", None), getattr(raw, "_pool", None)
    if sock is not None and pool is not None:
        pool.release_socket(sock)
        raw._sock = raw._pool = None
