"""The environment fingerprint of a run: what a figure depends on besides the code.

Two results are compared (gate, ``sixty compare``) only when their fingerprints agree on
hardware, interpreter, key packages, Postgres and its backend; the commit and its dirty
flag are recorded so a reader knows what was measured.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import psutil

from sixty_core.db.provision import connect
from sixty_core.harness.results import Fingerprint

#: The packages whose versions shape the figures.
KEY_PACKAGES = (
    "asyncpg",
    "cachetools",
    "locust",
    "memray",
    "msgspec",
    "pgserver",
    "pytest-benchmark",
    "starlette",
    "uvicorn",
)
GIT_TIMEOUT_S = 5.0


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def git_state(repo: Path) -> tuple[str, bool]:
    """(commit, dirty) of the checkout at ``repo``; ("unknown", False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(status.strip())


async def postgres_version(dsn: str) -> str:
    conn = await connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def fingerprint(dsn: str, backend: str, repo: Path) -> Fingerprint:
    commit, dirty = git_state(repo)
    return Fingerprint(
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        system=platform.platform(terse=True),
        python=platform.python_version(),
        packages={name: _version(name) for name in KEY_PACKAGES},
        postgres=await postgres_version(dsn),
        db_backend=backend,
        git_commit=commit,
        git_dirty=dirty,
    )
