"""Deals inserted during a load run, watched on the database's own change feed.

The ``deals`` trigger notifies ``deal_changes`` on every committed insert (migration
0002). :class:`InsertWatcher` LISTENs on its own connection and looks each new id's name
up at once (one query per insert, in arrival order), so a row the run creates twice is
counted even when a client deletes one copy later or never heard of it (an edge that
wrote and then timed out).
Load runs name each wizard create uniquely (``load <run id> ...``), so rows beyond the
first per name are duplicates. The watcher also counts every insert and delete it is
notified of, so a run can say how much its data grew (memory under load is read beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any

import asyncpg

from sixty_core.db.provision import connect

#: How long the last commits' notifications get to arrive when the block ends.
DRAIN_S = 0.5


class InsertWatcher:
    """``async with InsertWatcher(dsn) as watcher:`` counts inserts until the block ends."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.names: dict[str, str] = {}
        #: Inserted rows gone before their name was read (deleted within milliseconds).
        self.unnamed = 0
        #: Rows inserted and deleted while watched (any client, not only this run's).
        self.inserted = 0
        self.deleted = 0

    async def __aenter__(self) -> InsertWatcher:
        self._conn = await connect(self._dsn)
        await self._conn.add_listener("deal_changes", self._on_change)
        self._task = asyncio.create_task(self._look_up_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._conn is not None and self._task is not None
        try:
            await asyncio.sleep(DRAIN_S)
            async with asyncio.timeout(30):
                await self._pending.join()
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._conn.close()

    def _on_change(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            change = json.loads(payload)
        except ValueError:
            return
        op = change.get("op")
        if op == "delete":
            self.deleted += 1
        elif op == "insert":
            self.inserted += 1
            if isinstance(change.get("id"), str):
                self._pending.put_nowait(change["id"])

    async def _look_up_forever(self) -> None:
        assert self._conn is not None
        while True:
            deal_id = await self._pending.get()
            try:
                name = await self._conn.fetchval("SELECT name FROM deals WHERE id = $1", deal_id)
                if name is None:
                    self.unnamed += 1
                else:
                    self.names[deal_id] = name
            finally:
                self._pending.task_done()

    def duplicates(self, name_prefix: str) -> int:
        """Rows beyond the first per name, among inserted rows named ``name_prefix...``."""
        counts = Counter(name for name in self.names.values() if name.startswith(name_prefix))
        return sum(count - 1 for count in counts.values())
