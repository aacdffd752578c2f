"""Specification of the reliability scenarios (RELIABILITY.md) and their scorecard.

Each scenario runs for real: the service, the edge upstream and two fault proxies on
loopback, on a private copy of the seeded database. The optimized profile must pass every
one; legacy must fail the ones the original system fails, with the finding that says why
(a scenario that cannot fail proves nothing). The scenarios that wait out real timeouts
run under the ``slow`` marker and in ``sixty reliability``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sixty_core.cli import main
from sixty_core.errors import SixtyError
from sixty_core.profiles import resolve_profile
from sixty_core.reliability import catalog
from sixty_core.reliability.outcome import Outcome, Trial
from sixty_core.reliability.runner import run_scenario, scenario_settings
from sixty_core.reliability.scorecard import SCHEMA, ReliabilityRecord, read, scorecard, write
from sixty_core.reliability.stack import running_stack
from sixty_core.reliability.table import markdown, scorecard_table
from sixty_core.settings import Settings
from tests.api_support import TEST_SCALE, TEST_SEED

QUICK = [s.id for s in catalog.SCENARIOS if s.quick]
SLOW = [s.id for s in catalog.SCENARIOS if not s.quick]


async def outcome_of(scenario_id: str, profile: str, dsn: str) -> Outcome:
    scenario = catalog.BY_ID[scenario_id]
    return await run_scenario(scenario, profile, dsn, Settings(), seed=TEST_SEED)


def explain(outcome: Outcome) -> str:
    return f"{outcome.profile} {outcome.scenario}: " + "; ".join(outcome.findings)


# --- optimized passes every scenario -----------------------------------------------------


@pytest.mark.parametrize("scenario_id", QUICK)
async def test_optimized_keeps_every_quick_guarantee(scenario_id: str, db_dsn: str) -> None:
    outcome = await outcome_of(scenario_id, "optimized", db_dsn)
    assert outcome.passed, explain(outcome)
    assert outcome.requests > 0
    assert outcome.server_errors == 0
    assert not outcome.leaked, outcome.leaked


@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", SLOW)
async def test_optimized_keeps_every_slow_guarantee(scenario_id: str, db_dsn: str) -> None:
    outcome = await outcome_of(scenario_id, "optimized", db_dsn)
    assert outcome.passed, explain(outcome)


async def test_figures_are_measured_not_assumed(db_dsn: str) -> None:
    """The database going down and coming back yields a measured recovery time, and the
    BOLA matrix counts the cases it tried."""
    down = await outcome_of("P8", "optimized", db_dsn)
    assert down.recovery_s is not None and 0 < down.recovery_s <= 5
    assert down.max_latency_ms is not None and down.deadline_ms is not None


async def test_every_id_taking_endpoint_is_tried_across_tenants(db_dsn: str) -> None:
    outcome = await outcome_of("I7", "optimized", db_dsn)
    assert outcome.cross_tenant == 0
    assert outcome.cross_tenant_cases is not None and outcome.cross_tenant_cases >= 15


# --- legacy fails where the original fails ------------------------------------------------


async def test_legacy_duplicates_a_deal_whose_edge_answer_was_cut(db_dsn: str) -> None:
    """E4: the edge wrote the deal, its answer was truncated; legacy's fallback (no
    idempotency key) writes it again."""
    outcome = await outcome_of("E4", "legacy", db_dsn)
    assert not outcome.passed
    assert outcome.rows_duplicated is not None and outcome.rows_duplicated > 0
    assert any("duplicate row" in f for f in outcome.findings), explain(outcome)


async def test_legacy_stampedes_the_database_on_a_cold_key(db_dsn: str) -> None:
    """C3: without single-flight, 200 concurrent reads run a statement each (and more)."""
    outcome = await outcome_of("C3", "legacy", db_dsn)
    assert not outcome.passed
    assert outcome.loader_calls is not None and outcome.loader_calls >= 200


@pytest.mark.slow
async def test_legacy_hammers_a_failing_edge_without_a_breaker(db_dsn: str) -> None:
    outcome = await outcome_of("E5", "legacy", db_dsn)
    assert not outcome.passed
    assert any("no breaker" in f for f in outcome.findings), explain(outcome)


@pytest.mark.slow
async def test_legacy_misses_the_create_deadline_on_a_hung_edge(db_dsn: str) -> None:
    outcome = await outcome_of("E2", "legacy", db_dsn)
    assert not outcome.passed
    assert outcome.overshoot_ms is not None and outcome.overshoot_ms > 0


# --- the stack itself ---------------------------------------------------------------------


async def test_the_service_reaches_postgres_only_through_the_proxy(db_dsn: str) -> None:
    """With the database proxy down, the service cannot answer a write; the admin path
    (direct) still works: so every fault on the proxy really reaches the service."""
    settings = scenario_settings(Settings())
    async with running_stack(
        db_dsn,
        resolve_profile("optimized"),
        seed_scale=TEST_SCALE,
        seed=TEST_SEED,
        settings=settings,
    ) as stack:
        assert (await stack.call("GET", "/api/health")).status_code == 200
        backends, _ = await stack.backends()
        assert backends >= 1
        assert stack.db_proxy.stats.active >= backends
        stack.db_proxy.down()
        await stack.terminate_backends()
        assert (await stack.call("GET", "/api/health")).status_code == 503
        await stack.db_proxy.up()


# --- outcome, scorecard, table (no database) -----------------------------------------------


def outcome(**fields: object) -> Outcome:
    base: dict[str, object] = {
        "scenario": "P1",
        "title": "t",
        "kind": "pool",
        "profile": "optimized",
        "passed": True,
        "findings": [],
        "seconds": 1.0,
    }
    import msgspec

    return msgspec.convert({**base, **fields}, Outcome)


def test_a_raw_server_error_is_a_finding_but_a_mapped_503_is_not() -> None:
    trial = Trial("P1", "t", "pool", "optimized")
    trial.answered(503, 0.01)
    trial.answered(504, 0.01)
    assert trial.outcome().passed
    trial.answered(500, 0.02)
    sealed = trial.outcome()
    assert not sealed.passed and sealed.server_errors == 1
    assert sealed.max_latency_ms == pytest.approx(20.0)


def test_trial_refuses_a_figure_the_outcome_does_not_have() -> None:
    with pytest.raises(ValueError, match="not an outcome figure"):
        Trial("P1", "t", "pool", "optimized").record(rows_eaten=1)


def test_scorecard_sums_and_maxes_the_outcomes_of_one_profile() -> None:
    outcomes = [
        outcome(scenario="P8", kind="pool", recovery_s=0.2, deadline_ms=1000, max_latency_ms=900),
        outcome(
            scenario="P10",
            kind="pool",
            passed=False,
            findings=["x"],
            recovery_s=1.5,
            deadline_ms=1000,
            max_latency_ms=1250,
            leaked={"backends": 2, "tasks": 1},
        ),
        outcome(scenario="E4", kind="edge", rows_lost=0, rows_duplicated=3),
        outcome(scenario="C1", kind="cache", stale_reads=0),
        outcome(scenario="I7", kind="input", cross_tenant=0, cross_tenant_cases=17),
        outcome(scenario="E4", kind="edge", profile="legacy", rows_duplicated=10),
    ]
    card = scorecard("optimized", outcomes, sql_call_sites=68, sql_findings=0)
    assert (card.faults_survived, card.faults_attempted) == (2, 3)
    assert (card.scenarios_passed, card.scenarios_run) == (4, 5)
    assert card.deadline_overshoot_ms == pytest.approx(250.0)
    assert card.leaked_connections == 2 and card.leaked_tasks == 1
    assert card.recovery_s == pytest.approx(1.5)
    assert card.rows_duplicated == 3 and card.rows_lost == 0
    assert card.stale_reads == 0 and card.cross_tenant_cases == 17
    assert card.loader_calls_per_key is None  # not measured is not zero


def test_a_recovery_that_never_came_is_not_reported_as_fast() -> None:
    never = outcome(scenario="P8", passed=False, findings=["never"], recovery_s=None)
    assert (
        scorecard("optimized", [never, outcome(scenario="P10", recovery_s=0.1)]).recovery_s is None
    )


def test_reliability_file_round_trips_and_refuses_foreign_files(tmp_path: Path) -> None:
    outcomes = [outcome(), outcome(profile="legacy", passed=False, findings=["it broke"])]
    record = ReliabilityRecord(
        schema=SCHEMA,
        created_at="2026-12-03T00:00:00+00:00",
        profiles=["legacy", "optimized"],
        quick=True,
        outcomes=outcomes,
        scorecards=[scorecard(p, outcomes) for p in ("legacy", "optimized")],
    )
    path = tmp_path / "reliability.json"
    write(record, path)
    assert read(path) == record
    text = markdown(record)
    assert "it broke" in text and "### legacy: 1 scenario(s) failed" in text
    header, rows = scorecard_table(record)
    assert header[1:3] == ["legacy", "optimized"]
    assert rows[0][1:3] == ["0 / 1", "1 / 1"]
    (tmp_path / "other.json").write_text(json.dumps({"schema": "sixty.results/1"}))
    with pytest.raises(SixtyError, match="not a sixty reliability file"):
        read(tmp_path / "other.json")
    with pytest.raises(SixtyError, match="no such reliability file"):
        read(tmp_path / "missing.json")


def test_unknown_scenarios_are_named() -> None:
    with pytest.raises(ValueError, match=r"unknown scenario.*P99"):
        catalog.select("P1,P99", quick=False)
    assert [s.id for s in catalog.select("p1, i7,P1", quick=False)] == ["P1", "I7"]
    assert {s.id for s in catalog.select(None, quick=True)} == set(QUICK)


# --- the command ----------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rel"
    assert main(["reliability", "--scenarios", "P1,Z9", "--out", str(out)]) == 2
    assert "unknown scenario(s) Z9" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["reliability", "--profiles", "fastest", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "fastest" in capsys.readouterr().err
    assert not out.exists()


def test_the_command_writes_the_scorecard_for_each_profile(tmp_path: Path) -> None:
    out = tmp_path / "rel"
    code = main(
        [
            "reliability",
            "--profiles",
            "legacy,optimized",
            "--scenarios",
            "C3,I7",
            "--out",
            str(out),
        ]
    )
    assert code == 0  # the last profile (optimized) passed everything it ran
    record = read(out / "reliability.json")
    assert record.profiles == ["legacy", "optimized"]
    assert [(o.profile, o.scenario) for o in record.outcomes] == [
        ("legacy", "C3"),
        ("legacy", "I7"),
        ("optimized", "C3"),
        ("optimized", "I7"),
    ]
    legacy, optimized = record.scorecards
    assert legacy.scenarios_passed == 1 and optimized.scenarios_passed == 2
    assert optimized.injection_findings == 0 and (optimized.sql_call_sites or 0) >= 60
    assert "C3 200 concurrent cold reads" in (out / "reliability.md").read_text()


# --- in sixty run's results, report and gate -------------------------------------------------


def test_the_scorecard_reaches_the_report_and_the_gate(tmp_path: Path) -> None:
    """Results carrying a reliability record: the report shows the scorecard and each
    failed scenario, and the gate holds the figures to budgets."""
    from sixty_core.harness import gate, report
    from sixty_core.harness.results import write as write_results
    from tests.results_support import build_results, profile

    outcomes = [
        outcome(
            scenario="E4",
            kind="edge",
            profile="legacy",
            passed=False,
            findings=["10 duplicate row(s) from 5 creates"],
            rows_duplicated=10,
        ),
        outcome(scenario="E4", kind="edge", rows_duplicated=0, rows_lost=0),
    ]
    results = build_results(profile("legacy"), profile("optimized"))
    results.reliability = ReliabilityRecord(
        schema=SCHEMA,
        created_at="2026-12-03T00:00:00+00:00",
        profiles=["legacy", "optimized"],
        quick=True,
        outcomes=outcomes,
        scorecards=[
            scorecard(p, outcomes, sql_call_sites=68, sql_findings=0)
            for p in ("legacy", "optimized")
        ],
    )
    path = tmp_path / "results.json"
    write_results(results, path)
    paths = report.render(path, tmp_path / "out")
    text = paths.markdown.read_text()
    assert "## Reliability scorecard" in text
    assert "legacy E4 (t): 10 duplicate row(s) from 5 creates" in text
    assert "Reliability scorecard" in paths.html.read_text()
    checks = gate.evaluate(
        results,
        [
            gate.parse_budget("optimized.reliability.rows_duplicated", "== 0"),
            gate.parse_budget("legacy.reliability.rows_duplicated", "== 0"),
            gate.parse_budget("*.reliability.scenarios_failed", "== 0"),
        ],
        None,
    )
    verdicts = {c.metric: c.verdict for c in checks}
    assert verdicts["optimized.reliability.rows_duplicated"] is gate.Verdict.PASS
    assert verdicts["legacy.reliability.rows_duplicated"] is gate.Verdict.FAIL
    assert verdicts["legacy.reliability.scenarios_failed"] is gate.Verdict.FAIL
    assert verdicts["optimized.reliability.scenarios_failed"] is gate.Verdict.PASS
