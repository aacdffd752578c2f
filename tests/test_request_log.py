"""Specification of sixty_core.request_log: what the service keeps of each request."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from sixty_core.request_log import BoundedRequestLog, RequestLog, UnboundedRequestLog


@pytest.mark.parametrize("make_log", [UnboundedRequestLog, BoundedRequestLog])
def test_request_logs_record_and_count(make_log: Callable[[], RequestLog]) -> None:
    """Both logs satisfy the RequestLog contract: record, len, retained bytes."""
    log = make_log()
    assert len(log) == 0 and log.retained_bytes() == 0
    log.record("POST", "/api/deals", 201, 3.5, b"{}")
    log.record("GET", "/api/deals", 200, 1.0, None)
    assert len(log) == 2 and log.retained_bytes() > 0


def test_unbounded_log_retains_whole_payloads_bounded_log_does_not() -> None:
    """2000 requests of 10 kB: the legacy log keeps ~20 MB, the bounded one 1000 summaries."""
    unbounded, bounded = UnboundedRequestLog(), BoundedRequestLog(maxlen=1000)
    for i in range(2000):
        for log in (unbounded, bounded):
            log.record("POST", f"/api/deals/{i}", 201, 2.0, bytes(10_000))
    assert len(unbounded) == 2000 and unbounded.retained_bytes() > 2000 * 10_000
    assert len(bounded) == 1000
    assert bounded.retained_bytes() < 1000 * 1000
    assert bounded.summaries()[0].path == "/api/deals/1000"
    assert bounded.summaries()[-1].payload_bytes == 10_000
    before = bounded.retained_bytes()
    bounded.record("POST", "/api/deals/x", 201, 2.0, bytes(10_000))
    assert abs(bounded.retained_bytes() - before) < 100


def test_a_bounded_log_counts_exactly_the_rows_and_paths_it_keeps() -> None:
    """Retained bytes are the kept rows and their paths, before and after rows fall off
    (paths of different lengths, so a leaving row's size matters)."""
    log = BoundedRequestLog(maxlen=3)
    row = sys.getsizeof((None,) * 5)
    for path in ["/a", "/api/deals/" + "x" * 40, "/b", "/api/stages", "/c" * 30, "/d"]:
        log.record("GET", path, 200, 1.0, None)
        kept = log.summaries()
        assert log.retained_bytes() == sum(row + sys.getsizeof(s.path) for s in kept)
