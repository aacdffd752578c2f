"""Schemathesis fuzzing of every operation as a scenario (RELIABILITY.md I1, I3).

The fuzzer lives in the test suite (``tests/test_fuzz_api.py``: coverage, positive and
negative cases per operation, with schemathesis's server-error and conformance checks).
This runs that test for one profile in a subprocess, bounded, and reads from its junit XML
the verdict and the cases tried per operation and status, so the scorecard reports the
same figures the test asserts. It needs a clone (the ``tests/`` folder beside the package).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from sixty_core import SOURCE_ROOT
from sixty_core.reliability.outcome import Trial
from sixty_core.reliability.stack import Stack

FUZZ_TEST = "tests/test_fuzz_api.py::test_every_operation_survives_fuzzing"
FUZZED_PROFILES = ("legacy", "optimized")
#: The fuzz test's own bound is 240 s; this one also covers pytest's start-up.
FUZZ_BOUND_S = 420.0
#: RELIABILITY.md §4: bad inputs tried, per operation that takes data (below).
MIN_CASES_PER_OPERATION = 200


def data_bearing_operations() -> set[str]:
    """Operations with a request body, a path parameter or several query parameters: the
    ones whose input space holds 200 distinct cases. The rest (``GET /api/stages``,
    ``POST /api/auth/logout``, the health check's one flag) have fewer possible inputs
    than that; their cases are counted, not held to the minimum."""
    from sixty_core.api.openapi import build_openapi

    found = set()
    for path, operations in build_openapi(legacy_create=False)["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            in_path = any(p.get("in") == "path" for p in params)
            if "requestBody" in operation or in_path or len(params) >= 2:
                found.add(f"{method.upper()} {path}")
    return found


async def fuzz_every_operation(stack: Stack, trial: Trial) -> None:
    """I1/I3: every operation fuzzed (coverage, positive, negative cases): no 5xx, no
    contract violation, and at least 200 cases per operation."""
    profile = trial.profile
    if not trial.expect(profile in FUZZED_PROFILES, f"the fuzz test runs {FUZZED_PROFILES} only"):
        return
    if not trial.expect(
        (SOURCE_ROOT / FUZZ_TEST.split("::")[0]).exists(), "needs a clone: no tests/"
    ):
        return
    with tempfile.TemporaryDirectory(prefix="sixty-fuzz-") as tmp:
        junit = Path(tmp) / "fuzz.xml"
        code, tail = await _pytest(f"{FUZZ_TEST}[{profile}]", junit)
        if not trial.expect(junit.exists(), f"the fuzz test did not run (exit {code}): {tail}"):
            return
        case = ET.parse(junit).find(".//testcase")
    if not trial.expect(case is not None, "the fuzz test was not collected"):
        return
    assert case is not None
    failure = case.find("failure")
    if failure is None:
        failure = case.find("error")
    trial.expect(
        failure is None,
        "fuzzing found: " + (failure.get("message", "") if failure is not None else "")[:300],
    )
    tried = _cases_tried(case)
    per_operation: Counter[str] = Counter()
    for label, statuses in tried.items():
        per_operation[label.rsplit(" ", 1)[0]] += sum(statuses.values())
        trial.requests += sum(statuses.values())
        trial.server_errors += sum(n for status, n in statuses.items() if int(status) >= 500)
    trial.record(bad_inputs=sum(per_operation.values()))
    bearing = data_bearing_operations()
    thin = {
        op: per_operation.get(op, 0)
        for op in bearing
        if per_operation.get(op, 0) < MIN_CASES_PER_OPERATION
    }
    trial.expect(
        not thin,
        f"fewer than {MIN_CASES_PER_OPERATION} cases for "
        + ", ".join(f"{op} ({n})" for op, n in sorted(thin.items())),
    )


def _cases_tried(case: ET.Element) -> dict[str, dict[str, int]]:
    for prop in case.iter("property"):
        if prop.get("name") == "cases_tried_json":
            loaded: dict[str, dict[str, int]] = json.loads(prop.get("value", "{}"))
            return loaded
    return {}


async def _pytest(node: str, junit: Path) -> tuple[int | None, str]:
    """Run one test node in a subprocess (bounded); its exit code and output's last line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", node, "-m", "slow", "-q", "-p", "no:cacheprovider",
        f"--junitxml={junit}", "-o", "junit_family=xunit1",
        cwd=SOURCE_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), FUZZ_BOUND_S)
    except TimeoutError:
        process.kill()
        with contextlib.suppress(ProcessLookupError):
            await process.wait()
        return None, f"killed after {FUZZ_BOUND_S:.0f} s"
    lines = out.decode(errors="replace").strip().splitlines()
    return process.returncode, lines[-1] if lines else ""
