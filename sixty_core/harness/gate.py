"""``sixty gate``: hold a run's figures to the budgets in ``[tool.sixty.gate]`` (DESIGN §7).

A budget maps a metric name, or an fnmatch pattern over names
(``"optimized.statements.*"``), to a k6-style limit: absolute (``"< 0.01"``, ``"<= 500"``,
``"> 0.5"``, ``">= 0.5"``, ``"== 0"``) or relative to a baseline run (``"+10%"``: may rise
at most 10%; ``"-5%"``: may fall at most 5%). A measured figure is judged by its whole
95% interval, so noise cannot pass or fail a budget by luck: PASS when every value in the
interval meets the limit, FAIL when none does, INCONCLUSIVE when the interval straddles
it. An exact counter (statements, duplicates, leaks) is compared exactly.

Exit codes (:func:`exit_code`, :func:`run_gate`):

- 0 (:data:`EXIT_PASS`): every check passed (a SKIPPED check, a relative budget without
  a baseline, does not count against it);
- 1 (:data:`EXIT_FAIL`): at least one check failed;
- 2 (:data:`EXIT_INCONCLUSIVE`): no check failed but at least one was inconclusive;
- 3 (:data:`EXIT_ERROR`): bad input: a missing or corrupt results file, a budget that
  does not parse or names no metric, or two environments that do not compare. Nothing is
  written then: reports already on disk are left as they were, so CI must read the code.
"""

from __future__ import annotations

import difflib
import enum
import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from sixty_core.errors import SixtyError
from sixty_core.harness.metrics import Metric, all_metrics
from sixty_core.harness.results import Results

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INCONCLUSIVE = 2
EXIT_ERROR = 3

#: The flag that lets two different environments be compared (named in errors).
ALLOW_ENV_FLAG = "--allow-env-mismatch"
SUITE_NAME = "sixty gate"
_TABLE = "[tool.sixty.gate]"
_SYNTAX = "write '< 0.01', '<= 500', '> 0.5', '>= 0.5', '== 0', '+10%' or '-5%'"
_ABSOLUTE = re.compile(r"^\s*(<=|>=|==|<|>)\s*(\S+)\s*$")
_RELATIVE = re.compile(r"^\s*([+-])\s*([^%\s]+)\s*%\s*$")
_UNITLESS = frozenset({"", "ratio"})
_ROUND_OFF = 1e-12
_HOLDS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


class GateError(SixtyError):
    """The gate's input cannot be judged: a bad budget, an unknown metric, another machine."""


class Verdict(enum.StrEnum):
    """A check's outcome; SKIPPED is a relative budget with no baseline to be relative to."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    SKIPPED = "SKIPPED"


_COLOURS = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.INCONCLUSIVE: "bold yellow",
    Verdict.SKIPPED: "dim",
}


@dataclass(frozen=True)
class Budget:
    """One line of ``[tool.sixty.gate]``: ``key`` (a name or pattern) must satisfy ``op``
    against ``limit``; when ``relative``, ``limit`` is the allowed change as a fraction of
    the baseline's value (``+10%`` is ``<=`` 0.10, ``-5%`` is ``>=`` -0.05)."""

    key: str
    text: str
    op: str
    limit: float
    relative: bool
    source: str = _TABLE

    def bound(self, baseline: float | None) -> float:
        """The absolute limit, given the baseline's value for a relative budget."""
        if not self.relative:
            return self.limit
        if baseline is None:
            raise ValueError(f"relative budget {self.key!r} needs a baseline value")
        return baseline * (1 + self.limit)


@dataclass(frozen=True)
class Check:
    """One budget applied to one metric, with a ``reason`` a person can act on. ``limit``
    is the budget as written; the value must satisfy ``op bound``, the resolved limit (None
    when the check never got that far: SKIPPED, or a figure missing)."""

    budget: str
    metric: str
    limit: str
    op: str
    bound: float | None
    value: float | None
    low: float | None
    high: float | None
    unit: str
    baseline: float | None
    verdict: Verdict
    reason: str
    source: str

    @property
    def profile(self) -> str:
        return self.metric.partition(".")[0]


def parse_budget(key: str, text: object, *, source: str = _TABLE) -> Budget:
    """The budget ``key = text``; GateError naming ``source``, the key and the text when
    ``text`` is not one of the k6-style forms."""
    where = f"{source}: {_TABLE} {key!r}"
    if not isinstance(text, str):
        hint = " (quote dotted metric names)" if isinstance(text, dict) else ""
        raise GateError(f"{where}: expected a budget string, got {text!r}{hint}; {_SYNTAX}")
    bad = GateError(f"{where} = {text!r}: not a budget; {_SYNTAX}")
    if match := _ABSOLUTE.match(text):
        op, number = match.groups()
        return Budget(key, text.strip(), op, _finite(number, bad), relative=False, source=source)
    if match := _RELATIVE.match(text):
        sign, number = match.groups()
        percent = _finite(number, bad)
        if percent < 0:
            raise bad
        # A rise is capped from above, a fall from below.
        op, fraction = ("<=", percent / 100) if sign == "+" else (">=", -percent / 100)
        return Budget(key, text.strip(), op, fraction, relative=True, source=source)
    raise bad


def _finite(number: str, bad: GateError) -> float:
    try:
        value = float(number)
    except ValueError:
        raise bad from None
    if not math.isfinite(value):
        raise bad
    return value


def load_budgets(pyproject: Path) -> list[Budget]:
    """The budgets of ``pyproject``'s ``[tool.sixty.gate]`` table, in file order;
    GateError naming the file and what to do when it is missing, is not TOML, has no
    such table or an empty one, or holds a budget that does not parse."""
    try:
        with pyproject.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise GateError(
            f"{pyproject}: no such file; pass the pyproject.toml that holds {_TABLE}"
        ) from None
    except OSError as exc:
        raise GateError(f"{pyproject}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateError(f"{pyproject}: not valid TOML ({exc})") from None
    table = document.get("tool", {}).get("sixty", {}).get("gate")
    if not isinstance(table, dict) or not table:
        raise GateError(
            f"{pyproject}: no budgets in {_TABLE}; add some, e.g. "
            f'"optimized.api_failure_rate" = "< 0.01"'
        )
    return [parse_budget(key, text, source=str(pyproject)) for key, text in table.items()]


def evaluate(results: Results, budgets: Sequence[Budget], baseline: Results | None) -> list[Check]:
    """Every budget against every metric of ``results`` it names, in budget order (a
    pattern's metrics sorted); GateError naming the budget when it names no metric."""
    metrics = all_metrics(results)
    before = all_metrics(baseline) if baseline is not None else None
    checks: list[Check] = []
    for budget in budgets:
        keys = [k for k in metrics if k == budget.key or fnmatchcase(k, budget.key)]
        if not keys:
            raise GateError(
                f"{budget.source}: {_TABLE} {budget.key!r}: unknown metric, it matches no "
                f"metric of the results; known metrics include {_suggest(budget.key, metrics)}"
            )
        checks.extend(_check(budget, metrics[key], before) for key in sorted(keys))
    return checks


def _suggest(key: str, metrics: Mapping[str, Metric]) -> str:
    names = sorted(metrics)
    near = difflib.get_close_matches(key, names, n=5, cutoff=0.6)
    return ", ".join(near or names[:6])


def _check(budget: Budget, metric: Metric, before: Mapping[str, Metric] | None) -> Check:
    def make(
        verdict: Verdict, reason: str, bound: float | None = None, base: float | None = None
    ) -> Check:
        return Check(
            budget=budget.key,
            metric=metric.key,
            limit=budget.text,
            op=budget.op,
            bound=bound,
            value=metric.value,
            low=metric.low,
            high=metric.high,
            unit=metric.unit,
            baseline=base,
            verdict=verdict,
            reason=reason,
            source=metric.source,
        )

    if budget.relative and before is None:
        return make(Verdict.SKIPPED, "relative budget, but no --baseline given")
    if metric.value is None:
        return make(Verdict.INCONCLUSIVE, f"not measured in this run ({metric.source})")
    base: float | None = None
    if before is not None and budget.relative:
        past = before.get(metric.key)
        if past is None:
            return make(Verdict.INCONCLUSIVE, "not in the baseline; re-run the baseline")
        if past.value is None:
            return make(Verdict.INCONCLUSIVE, f"not measured in the baseline ({past.source})")
        base = past.value
    bound = budget.bound(base)
    limit = f"{budget.op} {format_number(bound)}"
    if budget.relative:
        limit += f" (baseline {format_number(base)} {budget.text})"
    # An exact counter has no noise: its value is its whole interval.
    low, high = (metric.value, metric.value) if metric.exact else _interval(metric)
    outcome = _judge(budget.op, bound, low, high)
    figure = format_number(metric.value)
    if metric.unit not in _UNITLESS:
        figure += f" {metric.unit}"
    if not metric.exact:
        once = low == high == metric.value
        figure += " (measured once)" if once else f", 95% interval {format_interval(low, high)}"
    reasons = {
        Verdict.PASS: f"{figure}: meets {limit}",
        Verdict.FAIL: f"{figure}: breaks {limit}",
        Verdict.INCONCLUSIVE: f"{figure}: straddles {limit}; a longer run narrows the interval",
    }
    return make(outcome, reasons[outcome], bound, base)


def _interval(metric: Metric) -> tuple[float, float]:
    assert metric.value is not None
    low = metric.value if metric.low is None else metric.low
    high = metric.value if metric.high is None else metric.high
    return low, high


def _judge(op: str, bound: float, low: float, high: float) -> Verdict:
    """PASS when every value of [low, high] satisfies ``op bound``, FAIL when none does."""
    if op == "==":
        if low == high == bound:
            return Verdict.PASS
        return Verdict.FAIL if not low <= bound <= high else Verdict.INCONCLUSIVE
    holds = _HOLDS[op]
    # An upper limit is met by the whole interval when its top end meets it, and broken
    # by the whole interval when even its bottom end breaks it; a lower limit mirrors it.
    worst, best = (high, low) if op in ("<", "<=") else (low, high)
    if holds(worst, bound):
        return Verdict.PASS
    return Verdict.FAIL if not holds(best, bound) else Verdict.INCONCLUSIVE


def exit_code(checks: Sequence[Check]) -> int:
    """1 on any FAIL, else 2 on any INCONCLUSIVE, else 0 (SKIPPED does not count)."""
    verdicts = {check.verdict for check in checks}
    if Verdict.FAIL in verdicts:
        return EXIT_FAIL
    if Verdict.INCONCLUSIVE in verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


def check_environment(
    results: Results, baseline: Results | None, allow_mismatch: bool, *, against: str = "baseline"
) -> list[str]:
    """Warning lines when ``baseline`` (named ``against`` in messages) was measured in
    another environment and ``allow_mismatch`` is set; no lines when the environments
    agree or there is no baseline; GateError naming the differing fields otherwise."""
    if baseline is None:
        return []
    ours = results.fingerprint.comparable_key()
    theirs = baseline.fingerprint.comparable_key()
    differences = "; ".join(_differences(ours, theirs))
    if not differences:
        return []
    if not allow_mismatch:
        raise GateError(
            f"{against}: measured in another environment ({differences}); its figures do "
            f"not compare with these; pass {ALLOW_ENV_FLAG} to compare anyway"
        )
    return [
        f"environment mismatch with {against} ({differences}), allowed by {ALLOW_ENV_FLAG}: "
        "differences may come from the machine, not the code"
    ]


def _differences(ours: Mapping[str, object], theirs: Mapping[str, object]) -> list[str]:
    found: list[str] = []
    for field in [*ours, *(k for k in theirs if k not in ours)]:
        mine, other = ours.get(field), theirs.get(field)
        if isinstance(mine, dict) and isinstance(other, dict):
            # Name the package, not the whole version table.
            for name in sorted(mine.keys() | other.keys()):
                if mine.get(name) != other.get(name):
                    found.append(f"{field}.{name} {mine.get(name)!r} vs {other.get(name)!r}")
        elif mine != other:
            found.append(f"{field} {mine!r} vs {other!r}")
    return found


def overall(checks: Sequence[Check]) -> Verdict:
    """The verdict :func:`exit_code` stands for (PASS when nothing failed or wavered)."""
    return {EXIT_FAIL: Verdict.FAIL, EXIT_INCONCLUSIVE: Verdict.INCONCLUSIVE}.get(
        exit_code(checks), Verdict.PASS
    )


def format_number(value: float | None) -> str:
    """A figure as people read it: integers bare, otherwise four significant digits."""
    if value is None:
        return "n/a"
    if abs(value) < _ROUND_OFF:
        # Wilson's lower bound for zero failures comes out as 1e-19 or so, not 0.
        value = 0.0
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def format_interval(low: float | None, high: float | None) -> str:
    return f"[{format_number(low)}, {format_number(high)}]"
