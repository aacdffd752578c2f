"""Benchmark kit: what pytest-benchmark lacks for this service.

- :mod:`.timing` — coroutines timed on one persistent event loop, with pytest-benchmark's
  own calibration, warm-up and rounds (its issue #66: no asyncio support);
- :mod:`.counters` — deterministic counters per call beside the time (statements, auth
  lookups, cache and pool deltas, bytes, allocations) and CPU time per call;
- :mod:`.interleave` — two or more sides timed in alternating rounds in one process, with
  ratios and bootstrap confidence intervals;
- :mod:`.asgi` — an in-process ASGI caller (no network) and a lifespan driver;
- :mod:`.summary` — the table ``sixty bench`` prints from pytest-benchmark's JSON.
"""
