"""A pytest plugin that reports progress to a file, for ``sixty bench``'s progress bar.

Loaded with ``-p sixty_core.benchkit.progress``; writes one JSON line per event to the file
named by ``SIXTY_BENCH_PROGRESS`` (nothing when it is unset): ``{"total": N}`` after
collection, then ``{"done": nodeid, "outcome": ...}`` per test.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

PROGRESS_ENV = "SIXTY_BENCH_PROGRESS"


def _write(event: dict[str, Any]) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(event) + "\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    _write({"total": len(session.items)})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # One event per test: its call, or the setup/teardown that failed or skipped it.
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _write({"done": report.nodeid, "outcome": report.outcome})
    elif report.when == "teardown" and report.failed:
        _write({"error": report.nodeid, "outcome": "error"})
