"""Cache, session, tenant and concurrency guarantees of the running service
(RELIABILITY.md §1C-§1F): read-your-writes, single-flight, revocation, bounded session
cache, tenant isolation, lost updates, idempotent retries under faults and refleak-style
growth."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import uuid
from typing import Any

from sixty_core.accounting import QUERIES_HEADER
from sixty_core.reliability.driving import (
    check_exactly_once,
    keyed_create,
    own_deals,
    run_tag,
    timed,
)
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack, coroutine_name
from sixty_core.reliability.toxics import Latency, ResetPeer

_QUERIES = QUERIES_HEADER.decode()


async def read_your_writes(stack: Stack, trial: Trial, *, rounds: int = 100) -> None:
    """C1/C7: after each acknowledged write (PATCH, move), the deal and the owner's list
    show it: 0 stale reads, with the caches warm the whole time."""
    owner = stack.user(1)
    deal = (await own_deals(stack, owner, 1))[0]
    path = f"/api/deals/{deal['id']}"
    stages = (await stack.call("GET", "/api/stages", owner)).json()["data"]
    stale = 0
    for i in range(rounds):
        name = f"ryw-{i}"
        status, _, _ = await timed(stack, trial, "PATCH", path, owner, json={"name": name})
        if not trial.expect(status == 200, f"PATCH answered {status}"):
            break
        _, _, got = await timed(stack, trial, "GET", path, owner)
        _, _, listed = await timed(
            stack, trial, "GET", "/api/deals?limit=500&sort=updated_at", owner
        )
        seen = got.json()["data"]["name"] if got is not None else None
        in_list = {d["id"]: d["name"] for d in listed.json()["data"]} if listed is not None else {}
        stale += (seen != name) + (in_list.get(deal["id"]) != name)
        if i % 10 == 0:
            stage = stages[i // 10 % len(stages)]["id"]
            await timed(stack, trial, "POST", f"{path}/move", owner, json={"stage_id": stage})
            _, _, after = await timed(stack, trial, "GET", path, owner)
            stale += after is None or after.json()["data"]["stage_id"] != stage
    trial.record(stale_reads=stale)
    trial.expect(stale == 0, f"{stale} stale read(s) after acknowledged writes")


async def stampede(stack: Stack, trial: Trial, *, readers: int = 200) -> None:
    """C3: 200 concurrent readers of one cold deal; the loader (one statement) runs once."""
    owner = stack.user(1)
    await stack.call("GET", "/api/stages", owner)  # the session is warm: auth costs nothing
    deal = (await own_deals(stack, owner, 1))[0]
    path = f"/api/deals/{deal['id']}"
    answers = await asyncio.gather(
        *(timed(stack, trial, "GET", path, owner) for _ in range(readers))
    )
    ok = sum(1 for s, _, _ in answers if s == 200)
    statements = sum(int(r.headers.get(_QUERIES, "0")) for _, _, r in answers if r is not None)
    trial.record(loader_calls=statements)
    trial.expect(ok == readers, f"{readers - ok} of {readers} concurrent reads failed")
    trial.expect(statements == 1, f"{readers} concurrent cold reads ran {statements} statements")


async def logout_revokes(stack: Stack, trial: Trial) -> None:
    """S1: logout revokes the token at once, even with the session cached."""
    owner = stack.user(3)
    for _ in range(3):
        await timed(stack, trial, "GET", "/api/stages", owner)
    status, _, _ = await timed(stack, trial, "POST", "/api/auth/logout", owner)
    trial.expect(status in (200, 204), f"logout answered {status}")
    after, _, _ = await timed(stack, trial, "GET", "/api/deals?limit=1", owner)
    trial.expect(after == 401, f"the first request after logout answered {after}")


async def bad_tokens(stack: Stack, trial: Trial) -> None:
    """S3/I5: missing, malformed and forged tokens get 401, never 200 or 5xx."""
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer \u00e9\u00e9"},
        *({"Authorization": f"Bearer {secrets.token_urlsafe(24)}"} for _ in range(30)),
    ]
    wrong = []
    for path in ("/api/deals", "/api/stages", f"/api/deals/{uuid.uuid4()}"):
        for headers in cases:
            try:
                status, _, _ = await timed(stack, trial, "GET", path, None, headers=headers)
            except UnicodeEncodeError:
                continue  # the client cannot send it: nothing reached the service
            if status != 401:
                wrong.append(status)
    trial.record(bad_inputs=trial.requests)
    trial.expect(not wrong, f"bad tokens answered {sorted(set(wrong))} instead of 401")


async def token_spray(
    stack: Stack, trial: Trial, *, tokens: int = 5000, concurrency: int = 50
) -> None:
    """S5: a spray of random bad tokens leaves the session cache within its bound. Each
    is refused: 401, or 503 when admission control sheds it (fail closed either way)."""
    sessions = stack.components.cache.get_stats()["namespaces"].get("sessions")
    wrong: list[int] = []
    shed = 0
    for start in range(0, tokens, concurrency):
        answers = await asyncio.gather(
            *(
                timed(stack, trial, "GET", "/api/stages", secrets.token_urlsafe(24))
                for _ in range(min(concurrency, tokens - start))
            )
        )
        shed += sum(1 for s, _, _ in answers if s == 503)
        wrong += [s for s, _, _ in answers if s not in (401, 503)]
    trial.record(bad_inputs=tokens)
    trial.expect(
        not wrong, f"{len(wrong)} sprayed bad tokens answered {sorted(set(wrong))}, not 401"
    )
    after = stack.components.cache.get_stats()["namespaces"].get("sessions")
    if sessions is not None and after is not None:
        trial.expect(
            after["entries"] <= after["maxsize"],
            f"session cache holds {after['entries']} entries (max {after['maxsize']})",
        )


async def tenant_isolation(stack: Stack, trial: Trial) -> None:
    """I7: owner B tries every id-taking endpoint and method on owner A's deal, and on an
    id that does not exist; lists and filters are searched for A's rows. Anything but a
    403/404 without A's data is a cross-tenant access."""
    a, b = stack.user(1), stack.user(2)
    theirs = (await own_deals(stack, a, 1))[0]
    before = await _snapshot(stack, theirs["id"])
    stages = (await stack.call("GET", "/api/stages", b)).json()["data"]
    target = next(s["id"] for s in stages if s["id"] != theirs["stage_id"])
    ids = {"other owner's": theirs["id"], "missing": str(uuid.uuid4())}
    crossings = 0
    cases = 0
    for label, deal_id in ids.items():
        attempts: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", f"/api/deals/{deal_id}", {}),
            ("PATCH", f"/api/deals/{deal_id}", {"json": {"name": "taken"}}),
            ("PATCH", f"/api/deals/{deal_id}", {"json": {"owner_id": b.id}}),
            ("POST", f"/api/deals/{deal_id}/move", {"json": {"stage_id": target}}),
            (
                "POST",
                "/api/deals/bulk",
                {"json": {"operation": "update_stage", "deal_ids": [deal_id], "stage_id": target}},
            ),
            ("POST", "/api/deals/bulk", {"json": {"operation": "delete", "deal_ids": [deal_id]}}),
            ("DELETE", f"/api/deals/{deal_id}", {}),
        ]
        for method, path, kw in attempts:
            cases += 1
            status, _, response = await timed(stack, trial, method, path, b, **kw)
            leaked = response is not None and deal_id in response.text and status < 400
            if status not in (400, 403, 404, 422) or leaked:
                crossings += 1
                trial.expect(False, f"B {method} {path.split(deal_id)[0]}{{{label} id}}: {status}")
    for query in (f"owner_id={a.id}", f"search={theirs['name'][:20]}", "limit=500"):
        cases += 1
        status, _, response = await timed(stack, trial, "GET", f"/api/deals?{query}", b)
        if response is not None and status == 200 and theirs["id"] in response.text:
            crossings += 1
            trial.expect(False, f"B's list ?{query.split('=')[0]}= shows A's deal")
    after = await _snapshot(stack, theirs["id"])
    if after != before:
        crossings += 1
        trial.expect(False, "A's deal changed after B's attempts")
    trial.record(cross_tenant=crossings, cross_tenant_cases=cases)


async def _snapshot(stack: Stack, deal_id: str) -> str:
    rows = await stack.rows("SELECT to_jsonb(d) AS row FROM deals d WHERE id = $1::uuid", deal_id)
    return json.dumps(rows[0]["row"] if rows else None, sort_keys=True, default=str)


async def lost_updates(stack: Stack, trial: Trial, *, writers: int = 20) -> None:
    """I11: concurrent writers each read version v and PATCH the same deal; at most one
    may succeed from v (the rest get 409), else acknowledged writes are silently lost."""
    owner = stack.user(1)
    deal = (await own_deals(stack, owner, 1))[0]
    path = f"/api/deals/{deal['id']}"
    version = deal["version"]
    answers = await asyncio.gather(
        *(
            timed(stack, trial, "PATCH", path, owner, json={"name": f"lu-{i}", "version": version})
            for i in range(writers)
        )
    )
    accepted = [i for i, (s, _, _) in enumerate(answers) if s == 200]
    final = (await stack.rows("SELECT name FROM deals WHERE id = $1::uuid", deal["id"]))[0]["name"]
    lost = max(0, len(accepted) - 1)
    trial.record(rows_lost=lost)
    trial.expect(
        final in {f"lu-{i}" for i in accepted}, f"final name {final!r} is no acknowledged write"
    )
    trial.expect(
        lost == 0, f"{len(accepted)} writers from version {version} all acknowledged: {lost} lost"
    )
    statuses = sorted({s for s, _, _ in answers})
    trial.expect(set(statuses) <= {200, 409}, f"concurrent writers answered {statuses}")


async def idempotent_retries(stack: Stack, trial: Trial, *, creates: int = 10) -> None:
    """I12: creates whose database connection is reset mid-flight, retried by the client
    with the same key until accepted: one row per accepted create."""
    owner = stack.user(1)
    prefix = f"i12-{run_tag()}"
    stack.db_proxy.set_toxics(Latency(ms=100))
    statuses: dict[str, int] = {}

    async def create(name: str) -> None:
        for _ in range(4):
            status, _ = await keyed_create(stack, trial, owner, name)
            statuses[name] = status
            if status == 201:
                return
            await asyncio.sleep(0.2)

    async def resets() -> None:
        for _ in range(3):
            await asyncio.sleep(0.15)
            stack.db_proxy.set_toxics(ResetPeer())
            await asyncio.sleep(0.05)
            stack.db_proxy.set_toxics(Latency(ms=100))

    try:
        await asyncio.gather(resets(), *(create(f"{prefix}-{i}") for i in range(creates)))
    finally:
        stack.db_proxy.clear()
    accepted = sum(1 for s in statuses.values() if s == 201)
    trial.expect(accepted == creates, f"{creates - accepted} creates never accepted")
    await check_exactly_once(stack, trial, prefix, statuses)


async def refleak_rounds(
    stack: Stack, trial: Trial, *, warmup: int = 30, tracked: int = 6, cycles: int = 4
) -> None:
    """M2: CPython's refleak rule on the service, driven by the leak run's lifecycle
    workload (sign in, list, stages, pipeline, the event stream, create, update, move,
    delete, log out; four sessions a cycle). After ``warmup`` cycles (long enough to fill
    what is bounded: the optimized request log keeps 1,000 requests), each component
    counter the service exports (tasks, timers, listeners, retained bytes, cache entries,
    allocated blocks; read after a collection) must not grow in every tracked round, the
    leak run's rule; and fds, tasks and server backends must not grow over them.

    Allocated blocks are the whole process's (the service runs in it), and a block per
    request is the bar. ``cycles`` per round keeps the tracked requests (about 860) well
    above the few hundred blocks of churn a clean process shows: with 2 cycles a round
    (430 requests), CI once saw a clean run's floor rise 463 blocks and pass for a leak."""
    from sixty_core.harness.leaks import GROWTH_COUNTERS, Workload, grows
    from sixty_core.load.probes import sixty_series

    async def counters() -> dict[str, float]:
        _, series = sixty_series((await stack.call("GET", "/metrics?collect=1")).text)
        tasks = [t for t in asyncio.all_tasks() if not coroutine_name(t).startswith("_Link.")]
        backends, _ = await stack.backends()
        here = {
            "process_fds": float(len(os.listdir("/proc/self/fd"))),
            "process_tasks": float(len(tasks)),
            "pg_backends": float(backends),
        }
        watched = {k: v for k, v in series.items() if k.partition("{")[0] in GROWTH_COUNTERS}
        return {**watched, **here}

    async with stack.admin() as conn:
        workload = Workload(stack.http, conn, [o for o in stack.owners if not o.is_admin])
        for c in range(warmup):
            await workload.cycle(c)
        rounds = [await counters()]
        start = workload.requests
        for r in range(tracked):
            for c in range(cycles):
                await workload.cycle(warmup + r * cycles + c)
            rounds.append(await counters())
    tracked_requests = workload.requests - start
    trial.requests += workload.requests
    failed = len(workload.failures)
    trial.expect(not failed, f"{failed} workload request(s) failed: {workload.failures[:2]}")
    leaked: dict[str, int] = {}
    for name in rounds[0]:
        values = [r.get(name, 0.0) for r in rounds]
        growth = values[-1] - values[0]
        if name in ("process_fds", "process_tasks", "pg_backends"):
            grew = growth > 0 and all(b >= a for a, b in itertools.pairwise(values))
        else:
            grew = grows(name, values, tracked_requests)  # a block per request, at least
        if grew:
            leaked[name] = int(growth)
            trial.expect(
                False,
                f"{name} grew in every tracked round: " + " -> ".join(f"{v:,.0f}" for v in values),
            )
    trial.record(leaked=leaked)
