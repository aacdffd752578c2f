"""The CI performance gate: budgets from pyproject, verdicts on intervals, exit codes, and
reports that are written whole or not at all."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from sixty_core.harness import gate
from sixty_core.harness.gate import (
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    Budget,
    GateError,
    Verdict,
    check_environment,
    evaluate,
    load_budgets,
    parse_budget,
)
from sixty_core.harness.gate_report import junit_xml, markdown, run_gate
from sixty_core.harness.results import write
from tests.results_support import build_results, console, fingerprint, profile

REPO_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def budgets(**lines: str) -> list[Budget]:
    """Budgets from ``metric=text`` pairs; ``__`` in a name stands for a dot."""
    return [parse_budget(k.replace("__", "."), v) for k, v in lines.items()]


def only(checks: list[gate.Check], metric: str) -> gate.Check:
    (found,) = [c for c in checks if c.metric == metric]
    return found


def pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[project]\nname = "x"\n\n[tool.sixty.gate]\n{body}\n')
    return path


# ---------------------------------------------------------------------------------------
# Budgets


@pytest.mark.parametrize(
    ("text", "op", "limit", "relative"),
    [
        ("< 0.01", "<", 0.01, False),
        ("<= 500", "<=", 500.0, False),
        ("> 0.5", ">", 0.5, False),
        (">=0.5", ">=", 0.5, False),
        ("== 0", "==", 0.0, False),
        ("+10%", "<=", 0.10, True),
        ("-5%", ">=", -0.05, True),
        ("+0%", "<=", 0.0, True),
        (" + 2.5 % ", "<=", 0.025, True),
    ],
)
def test_every_k6_form_parses(text: str, op: str, limit: float, relative: bool) -> None:
    """Absolute limits keep their operator; '+p%' caps a rise, '-p%' caps a fall."""
    budget = parse_budget("optimized.x", text)
    assert (budget.op, budget.relative) == (op, relative)
    assert budget.limit == pytest.approx(limit)


@pytest.mark.parametrize("text", ["0.01", "< fast", "~ 5", "+5", "+-5%", "< nan", "<", "5%"])
def test_an_unparseable_budget_names_the_file_the_key_and_the_text(text: str) -> None:
    """The error says where the budget is and what was written."""
    with pytest.raises(GateError) as caught:
        parse_budget("optimized.x", text, source="ci/pyproject.toml")
    message = str(caught.value)
    assert message.startswith("ci/pyproject.toml: ")
    assert "'optimized.x'" in message and repr(text) in message


def test_a_non_string_budget_is_refused_with_a_hint() -> None:
    """A bare dotted key makes a TOML table; the error says to quote it."""
    with pytest.raises(GateError, match="quote dotted metric names"):
        parse_budget("optimized", {"api_failure_rate": "< 0.01"})


def test_load_budgets_reads_the_table_in_file_order(tmp_path: Path) -> None:
    """Keys keep their order and their source file."""
    path = pyproject(tmp_path, '"b.x" = "< 1"\n"a.y" = "+5%"')
    loaded = load_budgets(path)
    assert [(b.key, b.text) for b in loaded] == [("b.x", "< 1"), ("a.y", "+5%")]
    assert {b.source for b in loaded} == {str(path)}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ('[project]\nname = "x"\n', "no budgets in [tool.sixty.gate]"),
        ("[tool.sixty.gate]\n", "no budgets in [tool.sixty.gate]"),
        ("[tool.sixty.gate\n", "not valid TOML"),
    ],
)
def test_load_budgets_refuses_a_missing_file_or_table(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    """Each refusal names the file and what is wrong with it."""
    path = tmp_path / "pyproject.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GateError) as caught:
        load_budgets(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert problem in str(caught.value)


def test_the_repository_budgets_parse_and_pass_an_a_a_run() -> None:
    """The committed [tool.sixty.gate] parses, names real metrics and passes a healthy run
    against itself."""
    run = build_results()
    checks = evaluate(run, load_budgets(REPO_PYPROJECT), baseline=run)
    assert checks and {c.verdict for c in checks} == {Verdict.PASS}
    assert gate.exit_code(checks) == EXIT_PASS


# ---------------------------------------------------------------------------------------
# Verdicts


def test_a_a_passes_relative_budgets() -> None:
    """The same results as their own baseline: counters sit exactly on +0%, and a
    percentile's interval stays inside a +10% allowance."""
    run = build_results()
    checks = evaluate(
        run,
        [
            parse_budget("optimized.statements.*", "+0%"),
            parse_budget("optimized.deal_create_ms.p50", "+10%"),
        ],
        baseline=run,
    )
    assert [c.verdict for c in checks] == [Verdict.PASS] * 3


def test_a_measured_figure_cannot_pass_plus_zero_percent() -> None:
    """Half of a noisy figure's interval lies above its own value, so '+0%' on a timing
    is inconclusive even A/A: a relative budget on a measured figure needs headroom."""
    run = build_results()
    (check,) = evaluate(run, [parse_budget("optimized.deal_create_ms.p50", "+0%")], run)
    assert check.verdict is Verdict.INCONCLUSIVE


def test_an_extra_statement_on_an_endpoint_fails_naming_it() -> None:
    """The detector works: one more statement per request than the baseline is a FAIL."""
    before = build_results()
    after = build_results(profile(statements={"/api/stages": 2.0, "/api/deals": 3.0}))
    checks = evaluate(after, [parse_budget("optimized.statements.*", "+0%")], baseline=before)
    failed = only(checks, "optimized.statements./api/stages")
    assert failed.verdict is Verdict.FAIL
    assert failed.baseline == 1.0 and failed.bound == 1.0
    assert "2 statements/request" in failed.reason and "breaks <= 1" in failed.reason
    assert only(checks, "optimized.statements./api/deals").verdict is Verdict.PASS
    assert gate.exit_code(checks) == EXIT_FAIL


def test_failures_in_the_samples_fail_the_failure_rate_budget() -> None:
    """50 failed requests of 1000: the whole Wilson interval is above 1%."""
    run = build_results(profile(failures=50))
    (check,) = evaluate(run, budgets(optimized__api_failure_rate="< 0.01"), None)
    assert check.verdict is Verdict.FAIL
    assert check.low is not None and check.low >= 0.01
    assert "breaks < 0.01" in check.reason


def test_an_interval_straddling_the_limit_is_inconclusive() -> None:
    """5 failures of 1000: 0.5% measured, but the interval reaches past 1%."""
    run = build_results(profile(failures=5))
    (check,) = evaluate(run, budgets(optimized__api_failure_rate="< 0.01"), None)
    assert check.low is not None and check.high is not None
    assert check.low < 0.01 < check.high
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "straddles" in check.reason
    assert gate.exit_code([check]) == EXIT_INCONCLUSIVE


def test_the_same_rate_passes_once_the_interval_is_narrow() -> None:
    """Enough samples decide it: 0.5% of 20,000 lies wholly below 1%."""
    run = build_results(profile(failures=100, requests=20_000))
    (check,) = evaluate(run, budgets(optimized__api_failure_rate="< 0.01"), None)
    assert check.verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("< 1000", Verdict.PASS), ("< 60", Verdict.FAIL), ("< 120", Verdict.INCONCLUSIVE)],
)
def test_a_percentile_is_judged_by_its_bootstrap_interval(text: str, verdict: Verdict) -> None:
    """p50 of creates spread evenly over 96..144 ms (120 ms): a limit far above, far below,
    or inside its bootstrap interval."""
    (check,) = evaluate(build_results(), budgets(optimized__deal_create_ms__p50=text), None)
    assert check.verdict is verdict


@pytest.mark.parametrize(
    ("text", "verdict"),
    [(">= 0.5", Verdict.PASS), ("> 0.95", Verdict.FAIL), (">= 0.9", Verdict.INCONCLUSIVE)],
)
def test_a_lower_limit_mirrors_the_rule(text: str, verdict: Verdict) -> None:
    """A hit rate of 90%: its interval's bottom must meet a lower limit to pass."""
    (check,) = evaluate(build_results(), budgets(optimized__cache_hit_rate=text), None)
    assert check.verdict is verdict


def test_exact_counters_compare_exactly() -> None:
    """One duplicate breaks '== 0' outright; zero leaking components meets it."""
    run = build_results(profile(duplicates_in_db=1))
    checks = evaluate(
        run,
        budgets(optimized__duplicates_in_db="== 0", optimized__leaking_components="== 0"),
        None,
    )
    assert [c.verdict for c in checks] == [Verdict.FAIL, Verdict.PASS]
    assert checks[0].reason == "1 rows: breaks == 0"


def test_a_fractional_statement_count_is_no_noise() -> None:
    """A steady count of 1.5 against a baseline of 1 fails, never 'inconclusive'."""
    before = build_results()
    after = build_results(profile(statements={"/api/stages": 1.5, "/api/deals": 3.0}))
    budget = [parse_budget("optimized.statements./api/stages", "+10%")]
    (check,) = evaluate(after, budget, baseline=before)
    assert check.verdict is Verdict.FAIL


def test_a_wildcard_checks_every_metric_it_matches_and_no_other() -> None:
    """'optimized.statements.*' gives one check per endpoint of optimized, sorted."""
    run = build_results(profile("legacy"), profile())
    checks = evaluate(run, [parse_budget("optimized.statements.*", "< 9")], None)
    assert [c.metric for c in checks] == [
        "optimized.statements./api/deals",
        "optimized.statements./api/stages",
    ]
    assert {c.budget for c in checks} == {"optimized.statements.*"}


def test_a_relative_budget_without_a_baseline_is_skipped() -> None:
    """Skipped checks say why and do not stop the gate passing."""
    checks = evaluate(
        build_results(),
        budgets(optimized__memory_peak_mb="+20%", optimized__leaking_components="== 0"),
        None,
    )
    assert [c.verdict for c in checks] == [Verdict.SKIPPED, Verdict.PASS]
    assert checks[0].reason == "relative budget, but no --baseline given"
    assert gate.exit_code(checks) == EXIT_PASS


def test_a_metric_the_run_did_not_measure_is_inconclusive() -> None:
    """A profile without a load run has a failure rate of None: nothing to judge."""
    run = build_results(profile(load=False))
    (check,) = evaluate(run, budgets(optimized__api_failure_rate="< 0.01"), None)
    assert check.verdict is Verdict.INCONCLUSIVE
    assert check.reason.startswith("not measured in this run")


def test_a_metric_missing_from_the_baseline_is_inconclusive() -> None:
    """A new endpoint has nothing to be relative to."""
    before = build_results(profile(statements={"/api/deals": 3.0}))
    (check,) = evaluate(
        build_results(), [parse_budget("optimized.statements./api/stages", "+0%")], before
    )
    assert check.verdict is Verdict.INCONCLUSIVE
    assert "not in the baseline" in check.reason


def test_a_budget_naming_no_metric_is_an_error_listing_known_ones() -> None:
    """A typo is not a silent pass: the error names the budget and suggests real names."""
    with pytest.raises(GateError) as caught:
        evaluate(build_results(), budgets(optimized__api_failure_rat="< 0.01"), None)
    message = str(caught.value)
    assert "'optimized.api_failure_rat'" in message and "unknown metric" in message
    assert "optimized.api_failure_rate" in message


def test_a_wildcard_matching_nothing_is_an_error() -> None:
    """A pattern that matches no metric is as wrong as a misspelt name."""
    with pytest.raises(GateError, match="unknown metric"):
        evaluate(build_results(), [parse_budget("staging.*", "< 1")], None)


# ---------------------------------------------------------------------------------------
# Environment


def test_the_same_environment_needs_no_warning() -> None:
    """Commit and dirty flag differ between runs; they are not part of the comparison."""
    run = build_results()
    other = build_results(fp=fingerprint(git_commit="def456", git_dirty=True))
    assert check_environment(run, other, allow_mismatch=False) == []
    assert check_environment(run, None, allow_mismatch=False) == []


def test_a_different_environment_is_refused_naming_the_fields() -> None:
    """The error names each differing field (a package by name) and the way out."""
    other = build_results(fp=fingerprint(python="3.12.1", packages={"asyncpg": "0.29.0"}))
    with pytest.raises(GateError) as caught:
        check_environment(build_results(), other, allow_mismatch=False, against="base.json")
    message = str(caught.value)
    assert message.startswith("base.json: measured in another environment")
    assert "python '3.11.9' vs '3.12.1'" in message
    assert "packages.asyncpg '0.30.0' vs '0.29.0'" in message
    assert "packages.msgspec '0.19.0' vs None" in message
    assert "--allow-env-mismatch" in message


def test_an_allowed_mismatch_becomes_a_warning() -> None:
    """With the flag the same facts come back as a warning line."""
    other = build_results(fp=fingerprint(cores=4))
    (warning,) = check_environment(build_results(), other, allow_mismatch=True)
    assert "cores 2 vs 4" in warning


# ---------------------------------------------------------------------------------------
# Reports


def mixed_checks() -> list[gate.Check]:
    """One of each verdict, over two profiles."""
    run = build_results(profile("legacy", failures=5), profile(duplicates_in_db=1))
    return evaluate(
        run,
        [
            parse_budget("legacy.api_failure_rate", "< 0.01"),
            parse_budget("optimized.duplicates_in_db", "== 0"),
            parse_budget("optimized.leaking_components", "== 0"),
            parse_budget("optimized.memory_peak_mb", "+20%"),
        ],
        None,
    )


def test_junit_xml_parses_with_the_right_counts_and_names() -> None:
    """One testsuite; a testcase per check, classname the profile, name the metric."""
    checks = mixed_checks()
    root = ET.fromstring(junit_xml(checks))
    (suite,) = root.iter("testsuite")
    assert suite.get("name") == "sixty gate"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "2")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("legacy", "legacy.api_failure_rate"),
        ("optimized", "optimized.duplicates_in_db"),
        ("optimized", "optimized.leaking_components"),
        ("optimized", "optimized.memory_peak_mb"),
    ]
    inconclusive, failed, passed, skipped = cases
    wavered, failure, ignored = (
        inconclusive.find("skipped"),
        failed.find("failure"),
        skipped.find("skipped"),
    )
    assert wavered is not None and wavered.get("message", "").startswith("inconclusive: ")
    assert failure is not None and "breaks == 0" in failure.get("message", "")
    assert ignored is not None and "no --baseline given" in ignored.get("message", "")
    assert list(passed) == []


def test_junit_xml_stays_well_formed_with_awkward_text() -> None:
    """Quotes, angle brackets and ampersands in names and reasons are escaped."""
    run = build_results(profile(statements={'/api/<x>&"y"': 2.0}))
    checks = evaluate(run, [parse_budget("optimized.statements.*", "< 1")], None)
    (case,) = ET.fromstring(junit_xml(checks)).iter("testcase")
    assert case.get("name") == 'optimized.statements./api/<x>&"y"'


def test_markdown_has_a_headline_verdict_then_a_table() -> None:
    """The first line says FAIL and the tally; every check is a row."""
    text = markdown(mixed_checks())
    lines = text.splitlines()
    assert "sixty gate: FAIL" in lines[0] and "1 failed, 1 inconclusive" in lines[0]
    rows = [line for line in lines if line.startswith("| **")]
    assert len(rows) == 4
    assert "`optimized.duplicates_in_db`" in text


def test_markdown_escapes_pipes_in_cells() -> None:
    """A pipe in an endpoint name cannot split a table row."""
    run = build_results(profile(statements={"/a|b": 1.0}))
    checks = evaluate(run, [parse_budget("optimized.statements.*", "< 9")], None)
    row = markdown(checks).splitlines()[-1]
    assert "/a\\|b" in row
    assert row.count(" | ") == 4


# ---------------------------------------------------------------------------------------
# run_gate: the whole command


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A healthy run and its baseline on disk, budgets in a pyproject, and where the
    reports go."""
    write(build_results(), tmp_path / "results.json")
    write(build_results(), tmp_path / "baseline.json")
    return {
        "results": tmp_path / "results.json",
        "baseline": tmp_path / "baseline.json",
        "pyproject": pyproject(
            tmp_path,
            '"optimized.api_failure_rate" = "< 0.01"\n'
            '"optimized.statements.*" = "+0%"\n'
            '"optimized.leaking_components" = "== 0"',
        ),
        "junit": tmp_path / "out" / "gate.xml",
        "markdown": tmp_path / "out" / "gate.md",
    }


def gate_run(files: dict[str, Path], **overrides: Any) -> tuple[int, str]:
    """run_gate on ``files`` (``overrides`` replace its keyword arguments): the exit code
    and everything it printed."""
    out, buffer = console()
    arguments: dict[str, Any] = {
        "pyproject": files["pyproject"],
        "baseline_path": files["baseline"],
        "junit_path": files["junit"],
        "markdown_path": files["markdown"],
        "allow_env_mismatch": False,
        "console": out,
    }
    arguments.update(overrides)
    code = run_gate(files["results"], **arguments)
    return code, buffer.getvalue()


def test_a_healthy_run_passes_and_writes_both_reports(files: dict[str, Path]) -> None:
    """Exit 0, the table and a summary line, both reports whole and no partial files."""
    code, output = gate_run(files)
    assert code == EXIT_PASS
    assert "optimized.statements./api/stages" in output
    assert output.rstrip().splitlines()[-1].startswith("sixty gate: PASS: 0 failed")
    assert ET.parse(files["junit"]).getroot().find("testsuite") is not None
    assert files["markdown"].read_text().startswith("✅ **sixty gate: PASS**")
    assert sorted(p.name for p in files["junit"].parent.iterdir()) == ["gate.md", "gate.xml"]


def test_a_regression_exits_1_and_reports_it(files: dict[str, Path]) -> None:
    """More statements than the baseline: exit 1, the JUnit failure names the metric."""
    write(
        build_results(profile(statements={"/api/stages": 4.0, "/api/deals": 3.0})),
        files["results"],
    )
    code, output = gate_run(files)
    assert code == EXIT_FAIL
    assert "FAIL" in output
    failed = [
        c.get("name")
        for c in ET.parse(files["junit"]).iter("testcase")
        if c.find("failure") is not None
    ]
    assert failed == ["optimized.statements./api/stages"]


def test_an_inconclusive_run_exits_2(files: dict[str, Path]) -> None:
    """A straddling failure rate and nothing failed: exit 2."""
    write(build_results(profile(failures=5)), files["results"])
    code, output = gate_run(files)
    assert code == EXIT_INCONCLUSIVE
    assert "INCONCLUSIVE" in output


def test_without_a_baseline_relative_budgets_are_skipped(files: dict[str, Path]) -> None:
    """No --baseline: the statements budget is skipped and the rest still pass."""
    code, output = gate_run(files, baseline_path=None)
    assert code == EXIT_PASS
    assert output.count("SKIPPED") == 2


def _bad_input(files: dict[str, Path], case: str) -> tuple[dict[str, Any], Path, str]:
    """(overrides, the file to blame, a phrase of the problem) for one kind of bad input."""
    results, baseline = files["results"], files["baseline"]
    if case == "missing results":
        results.unlink()
        return {}, results, "no such results file"
    if case == "missing baseline":
        absent = baseline.with_name("absent.json")
        return {"baseline_path": absent}, absent, "no such results file"
    if case == "corrupt results":
        results.write_text('{"schema": "sixty.results/1", ')
        return {}, results, "corrupt JSON"
    if case == "future schema":
        baseline.write_text(baseline.read_text().replace("sixty.results/1", "sixty.results/9"))
        return {}, baseline, "schema version 9 is newer"
    if case == "unknown metric":
        path = pyproject(files["pyproject"].parent, '"optimized.p95_ms" = "< 1"')
        return {"pyproject": path}, path, "unknown metric"
    if case == "unparseable budget":
        path = pyproject(files["pyproject"].parent, '"optimized.api_failure_rate" = "under 1%"')
        return {"pyproject": path}, path, "'under 1%': not a budget"
    if case == "missing pyproject":
        path = files["pyproject"].with_name("absent.toml")
        return {"pyproject": path}, path, "no such file"
    assert case == "env mismatch"
    write(build_results(fp=fingerprint(postgres="17.0")), baseline)
    return {}, baseline, "postgres '16.4' vs '17.0'"


BAD_INPUTS = [
    "missing results",
    "missing baseline",
    "corrupt results",
    "future schema",
    "unknown metric",
    "unparseable budget",
    "missing pyproject",
    "env mismatch",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_3_with_one_line_and_writes_nothing(
    files: dict[str, Path], case: str
) -> None:
    """One line naming the file and the problem; no report appears."""
    overrides, blamed, problem = _bad_input(files, case)
    code, output = gate_run(files, **overrides)
    assert code == EXIT_ERROR
    (line,) = output.splitlines()
    assert line.startswith(f"sixty gate: error: {blamed}: ")
    assert problem in line
    assert not files["junit"].exists() and not files["markdown"].exists()
    assert not files["junit"].parent.exists()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_leaves_earlier_reports_untouched(files: dict[str, Path], case: str) -> None:
    """A previous run's reports stay byte for byte; no partial file appears beside them."""
    files["junit"].parent.mkdir()
    files["junit"].write_text("old junit")
    files["markdown"].write_text("old markdown")
    overrides, _, _ = _bad_input(files, case)
    code, _ = gate_run(files, **overrides)
    assert code == EXIT_ERROR
    assert files["junit"].read_text() == "old junit"
    assert files["markdown"].read_text() == "old markdown"
    assert sorted(p.name for p in files["junit"].parent.iterdir()) == ["gate.md", "gate.xml"]


def test_an_allowed_env_mismatch_is_flagged_in_every_output(files: dict[str, Path]) -> None:
    """The table, the JUnit file and the Markdown all carry the warning."""
    write(build_results(fp=fingerprint(cpu_model="Other CPU")), files["baseline"])
    code, output = gate_run(files, allow_env_mismatch=True)
    assert code == EXIT_PASS
    # The table's caption wraps at the table's width; read it as words.
    words = " ".join(output.split())
    assert "warning: environment mismatch" in words and "'Other CPU'" in words
    suite = ET.parse(files["junit"]).getroot().find("testsuite")
    assert suite is not None
    warnings = [p.get("value", "") for p in suite.iter("property") if p.get("name") == "warning"]
    assert len(warnings) == 1 and "cpu_model" in warnings[0]
    assert "environment mismatch" in (suite.findtext("system-out") or "")
    assert "> **Warning:** environment mismatch" in files["markdown"].read_text()


def test_errors_can_go_to_their_own_console(files: dict[str, Path]) -> None:
    """The command line sends the error line to stderr and nothing to stdout."""
    err, errors = console()
    code, output = gate_run(
        files, pyproject=files["pyproject"].with_name("no.toml"), error_console=err
    )
    assert code == EXIT_ERROR
    assert output == ""
    assert errors.getvalue().startswith("sixty gate: error: ")


def test_reports_are_only_written_when_asked(files: dict[str, Path]) -> None:
    """Without paths the gate prints and writes nothing."""
    code, _ = gate_run(files, junit_path=None, markdown_path=None)
    assert code == EXIT_PASS
    assert not files["junit"].parent.exists()
