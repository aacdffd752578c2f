"""What a memray capture says about the service's memory, attributed to components.

An allocation belongs to the innermost ``sixty_core`` frame on its stack outside the HTTP
plumbing (a *site*), and a site to a component by its module. Read from captures of
``sixty leaks`` (temporal: what the tracked cycles allocated and never freed) and of
``sixty load --memray`` (aggregated: who held the heap at its peak).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

FLAMEGRAPH_TIMEOUT_S = 300.0

#: Module of the innermost sixty_core frame -> component, for memray's stacks.
MODULE_COMPONENTS: dict[str, str] = {
    "monitor": "session_monitor",
    "feed": "feed",
    "sse": "feed",
    "streams": "feed",
    "request_log": "request_log",
    "faults": "test_faults",
    "cache": "cache",
    "static_data": "cache",
}


def _frame_text(frame: tuple[str, str, int]) -> str:
    function, filename, line = frame
    short = filename.split("site-packages/")[-1]
    if "sixty_core/" in short:
        short = "sixty_core/" + short.split("sixty_core/", 1)[1]
    return f"{short}:{line} {function}"


def _at_import(frames: Sequence[tuple[str, str, int]]) -> bool:
    """Allocated while a module was being imported (under importlib's frames): it lives
    as long as the process, which is not a leak. (The entry point's own module body,
    run by runpy, encloses every stack and does not count.)"""
    return any(filename.startswith("<frozen importlib") for _, filename, _ in frames)


#: The HTTP plumbing between uvicorn and a handler: an allocation made under it is
#: attributed to the innermost ``sixty_core`` frame outside it, when there is one.
PLUMBING = frozenset(
    {"server", "routing", "boundary", "accounting", "app", "responses", "routes", "servers"}
)
#: memray records of the Python allocator domain; the arenas under them (malloc, mmap)
#: would count the same memory twice.
PYTHON_ALLOCATORS = frozenset({"PYMALLOC_MALLOC", "PYMALLOC_CALLOC", "PYMALLOC_REALLOC"})


class Site(msgspec.Struct):
    """Allocations still alive at the end that were made under one site (the innermost
    ``sixty_core`` frame outside the HTTP plumbing, with its caller) *after the warm-up*:
    what the tracked cycles left behind. ``frames`` is one full stack, innermost first."""

    site: str
    component: str
    survivors: int
    survivor_bytes: int
    frames: list[str]


def _site_of(frames: Sequence[tuple[str, str, int]]) -> tuple[str, str] | None:
    ours = [f for f in frames if "sixty_core/" in f[1]]
    if not ours:
        return None
    domain = [f for f in ours if Path(f[1]).stem not in PLUMBING]
    chosen = domain or ours
    module = Path(chosen[0][1]).stem
    component = MODULE_COMPONENTS.get(module, module) if domain else "http"
    return " <- ".join(_frame_text(f) for f in chosen[:2]), component


class PeakAllocator(msgspec.Struct):
    """Memory held at the heap's peak by one site: the innermost ``sixty_core`` frame
    outside the plumbing; for what importing modules allocated, the ``import`` line
    (component ``imports``); else the innermost frame (component ``other``)."""

    site: str
    component: str
    bytes: int
    allocations: int


def peak_allocators(reader: Any, limit: int = 10) -> list[PeakAllocator]:
    """The sites holding most memory at the peak of ``reader``'s capture."""
    sites: dict[str, PeakAllocator] = {}
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        frames = list(record.stack_trace())
        where = _site_of(frames)
        if _at_import(frames):
            ours = [f for f in frames if "sixty_core/" in f[1]]
            where = (_frame_text(ours[0]) if ours else "(imports)", "imports")
        elif where is None:
            where = (_frame_text(frames[0]) if frames else "(no Python frame)", "other")
        key, component = where
        entry = sites.get(key)
        if entry is None:
            entry = sites[key] = PeakAllocator(key, component, 0, 0)
        entry.bytes += record.size
        entry.allocations += record.n_allocations
    return sorted(sites.values(), key=lambda p: p.bytes, reverse=True)[:limit]


class MemrayFindings(msgspec.Struct):
    capture: str
    flamegraph: str | None
    peak_heap_mb: float
    #: memray's live heap from the end of the warm-up to the last cycle, per 10k requests:
    #: the flatness figure (RSS under tracing also holds memray's own capture buffers).
    heap_slope_mb_per_10k_requests: float | None
    leaked_bytes: int
    survivor_bytes_by_component: dict[str, int]
    sites: list[Site]
    at_peak: list[PeakAllocator] = []


def _heap_at(snapshots: Sequence[Any], t: float) -> int | None:
    before = [snap.heap for snap in snapshots if snap.time / 1000 <= t]
    return before[-1] if before else None


def memray_findings(
    capture: Path,
    flamegraph: Path | None,
    since: float,
    until: float,
    requests: int,
    *,
    with_peak_allocators: bool = True,
) -> MemrayFindings:
    """What ``capture`` says: peak heap, the heap's growth from ``since`` to ``until``
    (epoch seconds: the end of the warm-up and of the last cycle) over ``requests``, bytes
    never freed, and the sites whose allocations made after ``since`` were never freed,
    most first. Python-allocator records only; import-time allocations skipped."""
    from memray import AllocatorType, FileReader

    reader = FileReader(str(capture))
    try:
        snapshots = list(reader.get_memory_snapshots())
        first_tracked = sum(1 for snap in snapshots if snap.time / 1000 < since)
        sites: dict[str, Site] = {}
        leaked = 0
        for record in reader.get_temporal_allocation_records(merge_threads=True):
            if AllocatorType(record.allocator).name not in PYTHON_ALLOCATORS:
                continue
            alive = [i for i in record.intervals if i.deallocated_before_snapshot is None]
            leaked += sum(i.n_bytes for i in alive)
            late = [i for i in alive if i.allocated_before_snapshot > first_tracked]
            if not late:
                continue
            frames = list(record.stack_trace())
            where = _site_of(frames)
            if where is None or _at_import(frames):
                continue
            key, component = where
            site = sites.get(key)
            if site is None:
                site = sites[key] = Site(
                    key, component, 0, 0, [_frame_text(f) for f in frames[:12]]
                )
            site.survivors += sum(i.n_allocations for i in late)
            site.survivor_bytes += sum(i.n_bytes for i in late)
        ranked = sorted(sites.values(), key=lambda s: s.survivors, reverse=True)
        by_component: dict[str, int] = {}
        for site in ranked:
            by_component[site.component] = by_component.get(site.component, 0) + site.survivor_bytes
        peak = reader.metadata.peak_memory
        # A pass of its own over the capture (about as long as the rest together).
        at_peak = peak_allocators(reader) if with_peak_allocators else []
    finally:
        reader.close()
    start, end = _heap_at(snapshots, since), _heap_at(snapshots, until)
    slope = None
    if start is not None and end is not None and requests > 0:
        slope = (end - start) / 2**20 / requests * 10_000
    return MemrayFindings(
        capture=str(capture),
        flamegraph=str(flamegraph) if flamegraph else None,
        peak_heap_mb=peak / 2**20,
        heap_slope_mb_per_10k_requests=slope,
        leaked_bytes=leaked,
        survivor_bytes_by_component=dict(sorted(by_component.items(), key=lambda kv: -kv[1])),
        sites=ranked[:40],
        at_peak=at_peak,
    )


def write_flamegraph(capture: Path, out: Path) -> Path | None:
    """memray's leaks flamegraph of ``capture`` as self-contained HTML (None if it failed)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "memray",
            "flamegraph",
            "--leaks",
            "-f",
            "-o",
            str(out),
            str(capture),
        ],
        capture_output=True,
        timeout=FLAMEGRAPH_TIMEOUT_S,
        check=False,
    )
    return out if done.returncode == 0 and out.exists() else None
