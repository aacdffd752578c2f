"""How much memory the service keeps while an admin pages through distinct large lists.

Provisions an embedded Postgres seeded at ``--scale``, starts the edge upstream and the
service in ``--profile`` as processes on 127.0.0.1 (the harness's ``Supervisor``), then
sends ``--requests`` GETs of ``/api/deals`` as the admin, ``--concurrency`` at a time, each
a distinct query (``limit`` 451..500, ``offset`` 0, 1, ...), and prints the service's RSS
every 200 requests, its peak (``VmHWM``) and the query cache's figures from ``/metrics``.
The README's figures on the query cache's byte budget come from it::

    .venv/bin/python scripts/list_pages_rss.py --requests 2400
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx
import psutil

from sixty_core.db.workflow import StepLog, seeded_database
from sixty_core.harness.servers import Supervisor
from sixty_core.settings import Settings
from sixty_core.tokens import derive_token

REPORT_EVERY = 200
MIB = 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="optimized", help="profile to serve")
    parser.add_argument("--requests", type=int, default=2400, help="distinct pages to ask for")
    parser.add_argument("--concurrency", type=int, default=8, help="requests at a time")
    parser.add_argument("--scale", type=int, default=4, help="seed scale (500 deals a unit)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and tokens")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.scale < 1:
        parser.error("--requests, --concurrency and --scale must be at least 1")
    return args


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def query_cache_lines(url: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [line for line in text.splitlines() if 'namespace="queries"' in line]


async def page_through(url: str, token: str, args: argparse.Namespace, pid: int) -> None:
    service = psutil.Process(pid)
    gate = asyncio.Semaphore(args.concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def one(n: int) -> None:
            async with gate:
                response = await client.get(f"/api/deals?limit={500 - n % 50}&offset={n // 50}")
            response.raise_for_status()

        print(f"service RSS before: {service.memory_info().rss / MIB:.1f} MiB")
        for start in range(0, args.requests, REPORT_EVERY):
            end = min(args.requests, start + REPORT_EVERY)
            await asyncio.gather(*(one(n) for n in range(start, end)))
            print(f"{end:6d} requests  service RSS {service.memory_info().rss / MIB:7.1f} MiB")


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings(db_backend="embedded", seed_scale=args.scale, seed=args.seed)
    async with seeded_database(settings, log=StepLog()) as (db, _):
        supervisor = Supervisor(db.dsn, args.profile)
        supervisor.start()
        try:
            pid = supervisor.processes["service"].pid
            admin = derive_token(args.seed, 0)
            await page_through(supervisor.service_url, admin, args, pid)
            print(f"service peak RSS (VmHWM): {peak_rss_mb(pid):.1f} MiB")
            print("\n".join(query_cache_lines(supervisor.service_url)) or "(no query cache)")
        finally:
            supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
