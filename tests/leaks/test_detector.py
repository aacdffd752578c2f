"""The leak tests can fail: the same looped lifecycles with the legacy components (which
leak as ORIGINAL_SYSTEM.md §2.1 documents) fail ``limit_leaks``, and the report names the
stack in the component's own module. Run in a separate pytest (``pytester``), so a failing
run is asserted on, not expected-to-fail (an ``xfail`` would also pass if the detector
were broken)."""

from __future__ import annotations

from pathlib import Path

import pytest

LEGACY_TESTS = """
import asyncio

import pytest

from sixty_core.memory import MemoryManager
from sixty_core.monitor import LEGACY_MONITORING, PerformanceMonitor
from sixty_core.request_log import UnboundedRequestLog
from filters import not_an_interpreter_cache

MANAGER = MemoryManager(tracking=False, peak_reader=None)
MONITOR = PerformanceMonitor(MANAGER, 10.0, LEGACY_MONITORING, max_sessions=1024)
LOG = UnboundedRequestLog()


@pytest.mark.limit_leaks("8 KB", filter_fn=not_an_interpreter_cache)
def test_legacy_session_monitors():
    async def sessions():
        for i in range(200):
            token = f"{i:064x}"
            await MONITOR.on_request(token)
            await MONITOR.on_logout(token)

    asyncio.run(sessions())


@pytest.mark.limit_leaks("8 KB", filter_fn=not_an_interpreter_cache)
def test_legacy_request_log():
    for i in range(200):
        LOG.record("POST", "/api/deals", 201, float(i), b"x" * 2048)
"""


@pytest.fixture
def legacy_run(pytester: pytest.Pytester) -> pytest.RunResult:
    # The same filter as the optimized tests, next to the generated test module.
    pytester.makepyfile(
        filters=(Path(__file__).parent / "filters.py").read_text(),
        test_legacy_leaks=LEGACY_TESTS,
    )
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "filterwarnings=",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "--rootdir",
        str(pytester.path),
        "--stacks",
        "80",
        timeout=120,
    )


def test_the_legacy_leaks_fail_with_their_stacks(legacy_run: pytest.RunResult) -> None:
    output = legacy_run.stdout.str()
    legacy_run.assert_outcomes(failed=2)
    for test in ("test_legacy_session_monitors", "test_legacy_request_log"):
        assert f"MEMORY PROBLEMS test_legacy_leaks.py::{test}" in output
    assert "leak 8.0KiB per location but at least one location leaked more" in output
    # The leaked allocations' stacks name where each component keeps them.
    assert "_open:" in output and "sixty_core/monitor.py" in output
    assert "record:" in output and "sixty_core/request_log.py" in output
