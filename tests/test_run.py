"""``sixty run --quick`` end to end at the smallest scale, on the embedded Postgres: the
three files it writes, the report computed from ``results.json`` alone, the gate on real
results (A/A passes, an injected regression fails naming its metric) and the rendered
page in a real headless browser. One real run of about three minutes, shared by the
module, plus one short run with an injected fault."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest

from sixty_core.harness import claims, report
from sixty_core.harness.metrics import all_metrics
from sixty_core.harness.results import SCHEMA, Results, read, write

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 600


def sixty(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixty_core", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "quick"
    done = sixty("run", "--quick", "--scale", "1", "--out", str(out), timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert str(out / "report.html") in done.stdout
    return out


def copy_with(results: Results, path: Path) -> Path:
    write(results, path)
    return path


def test_quick_run_writes_results_and_both_reports(quick: Path) -> None:
    results = read(quick / "results.json")
    assert results.schema == SCHEMA
    assert [p.profile for p in results.profiles] == ["legacy", "optimized"]
    for record in results.profiles:
        assert record.load is not None and record.leaks is not None
        assert len(record.load.raw.ms) == len(record.load.raw.ok) > 100
        assert record.load.raw.creates_ms, "the wizard created deals"
        assert record.load.samples_match_locust is True
        assert len(record.load.series.t_s) > 10
        assert (quick / record.load.dir / "samples").is_dir()
        assert {s.endpoint for s in record.statements} >= {"GET /api/stages", "GET /api/deals"}
    assert results.bench is not None and results.bench.rows
    assert results.fingerprint.postgres and results.fingerprint.cores >= 1
    assert results.method.quick and results.method.template_clone
    markdown = (quick / "report.md").read_text()
    for claim in claims.CLAIMS:
        assert claim.label in markdown
    assert (quick / "report.html").stat().st_size > 50_000  # four inline plots


def test_profiles_differ_where_the_original_did(quick: Path) -> None:
    """What legacy and optimized are documented to do, seen in the measured figures."""
    metrics = all_metrics(read(quick / "results.json"))
    assert metrics["legacy.statements.GET /api/stages"].value == 6
    assert metrics["optimized.statements.GET /api/stages"].value == 0
    assert metrics["optimized.leaking_components"].value == 0
    assert metrics["legacy.leaking_components"].value == 2
    # The legacy client's fallback insert after a success reported as an error.
    assert (metrics["legacy.duplicates_in_db"].value or 0) > 0
    assert metrics["optimized.duplicates_in_db"].value == 0
    assert (metrics["legacy.api_failure_rate"].value or 0) > 0


def test_claims_are_computed_from_the_raw_samples(quick: Path, tmp_path: Path) -> None:
    """Alter raw samples in results.json and the claims table moves with them."""
    results = read(quick / "results.json")
    before = {r.claim.metric: r for r in report.claim_rows(results)}
    optimized = results.profile("optimized")
    assert optimized is not None and optimized.load is not None
    optimized.load.raw.creates_ms = [ms * 10 for ms in optimized.load.raw.creates_ms]
    optimized.load.raw.ok = [False] * len(optimized.load.raw.ok)
    altered = copy_with(results, tmp_path / "results.json")
    after = {r.claim.metric: r for r in report.claim_rows(read(altered))}
    p50 = "deal_create_ms.p50"
    assert after[p50].after.value == pytest.approx(before[p50].after.value * 10)  # type: ignore[operator]
    assert after["api_failure_rate"].after.value == 1.0
    assert after["api_failure_rate"].verdict == claims.REFUTED
    paths = report.render(altered, tmp_path)
    assert "100.0%" in paths.markdown.read_text()


def test_gate_passes_a_results_file_against_itself(quick: Path, tmp_path: Path) -> None:
    budgets = tmp_path / "pyproject.toml"
    budgets.write_text(
        "[tool.sixty.gate]\n"
        '"optimized.statements.*" = "+0%"\n'
        '"optimized.leaking_components" = "== 0"\n'
        '"optimized.duplicates_in_db" = "== 0"\n'
        '"optimized.memory_peak_mb" = "+20%"\n'
    )
    results = str(quick / "results.json")
    junit = tmp_path / "gate.xml"
    done = sixty(
        "gate", results, "--baseline", results, "--budgets", str(budgets), "--junit", str(junit)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert junit.read_text().count("<testcase") >= 4


# Two real runs of one profile (about 35 s each): in `make test-slow` (and .ci/run), which
# keeps `make test` inside its 15 minutes. `make test` still holds the gate's verdicts on
# synthetic results (tests/test_gate.py), the quick run gated against itself (above) and the
# injected statement counted per request (tests/test_statements.py).
@pytest.mark.slow
def test_run_with_gate_fails_an_injected_extra_query_naming_the_metric(tmp_path: Path) -> None:
    """``sixty run --gate``: a real run with one more statement per request, gated
    against a clean run of the same kind as baseline, exits 1 and names the endpoint in
    its JUnit."""
    one_profile = ["--quick", "--scale", "1", "--profiles", "optimized", "--no-bench", "--no-leaks"]
    baseline = tmp_path / "baseline"
    done = sixty("run", *one_profile, "--out", str(baseline), timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    budgets = tmp_path / "pyproject.toml"
    budgets.write_text('[tool.sixty.gate]\n"optimized.statements.*" = "+0%"\n')
    out = tmp_path / "regressed"
    done = sixty(
        "run",
        *one_profile,
        "--inject",
        "extra_query",
        "--gate",
        "--baseline",
        str(baseline / "results.json"),
        "--budgets",
        str(budgets),
        "--out",
        str(out),
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert read(out / "results.json").profiles[0].test_faults == ["extra_query"]
    assert "FAIL" in done.stdout
    failed = {
        case.get("name")
        for case in ET.parse(out / "gate.xml").iter("testcase")
        if case.find("failure") is not None
    }
    assert "optimized.statements.GET /api/stages" in failed
    assert "optimized.statements" in (out / "gate.md").read_text()


def test_run_with_gate_refuses_bad_budgets_before_it_starts(tmp_path: Path) -> None:
    budgets = tmp_path / "pyproject.toml"
    budgets.write_text('[tool.sixty.gate]\n"optimized.api_failure_rate" = "about 1%"\n')
    out = tmp_path / "never"
    done = sixty("run", "--gate", "--budgets", str(budgets), "--out", str(out))
    assert done.returncode == 3
    assert "about 1%" in done.stderr and str(budgets) in done.stderr
    assert not out.exists()


def need_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("SIXTY_REQUIRE_CHROMIUM") == "1":
        pytest.fail("SIXTY_REQUIRE_CHROMIUM=1, yet no headless Chromium is installed")
    pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")


def chromium(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_report_html_renders_whole_in_a_real_browser(quick: Path, tmp_path: Path) -> None:
    browser = need_chromium()
    page = (quick / "report.html").as_uri()
    dom = chromium(browser, "--virtual-time-budget=5000", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    total = re.search(r'data-images-total="(\d+)"', body.group(1))
    decoded = re.search(r'data-images-decoded="(\d+)"', body.group(1))
    assert total and decoded, body.group(0)
    assert int(total.group(1)) >= 4
    assert decoded.group(1) == total.group(1), "every plot decoded"
    assert '<h2 id="claims">Claims</h2>' in dom.stdout
    claims_table = dom.stdout.split('id="claims"', 1)[1].split("</table>", 1)[0]
    assert claims_table.count("<tr>") == 1 + len(claims.CLAIMS)

    shot = tmp_path / "page.png"
    done = chromium(browser, "--window-size=1200,2400", f"--screenshot={shot}", page)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50, "the page is not blank"


def test_report_and_run_refuse_bad_input_with_one_line(tmp_path: Path) -> None:
    missing = sixty("report", str(tmp_path / "nope.json"))
    assert missing.returncode == 3
    assert "nope.json" in missing.stderr and "no such results file" in missing.stderr
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    bad = sixty("report", str(corrupt))
    assert bad.returncode == 3 and "corrupt" in bad.stderr
    future = tmp_path / "future.json"
    future.write_bytes(msgspec.json.encode({"schema": "sixty.results/99"}))
    newer = sixty("report", str(future))
    assert newer.returncode == 3 and "newer" in newer.stderr
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report.html").exists()
    unknown = sixty("run", "--profiles", "legacy,bogus", "--out", str(tmp_path / "r"))
    assert unknown.returncode != 0 and "bogus" in unknown.stderr
    assert not (tmp_path / "r").exists()
