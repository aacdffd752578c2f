"""What ``sixty ceiling`` leaves behind: ``ceiling.json`` and ``ceiling.md`` written
together, and ``--show`` printing a saved run again (the measuring itself is the slow
end-to-end test in ``tests/test_hot_path.py``)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from sixty_core.cli import main
from sixty_core.errors import SixtyError
from sixty_core.harness import ceiling
from sixty_core.harness.ceiling import ENDPOINTS, Options, Result, judge

#: A run where the host took 5% of the CPU time and 12.5% was idle.
_CPU = {"steal": 0.05, "idle": 0.125}


def _stages_run() -> list[Result]:
    """Three rounds of the stages' sides, as a run would record them: optimized 5-6x
    legacy, at 1.5-1.6x the hello's cost."""
    result = Result(
        "GET /api/stages",
        rates={
            "legacy": [1000.0, 1100.0, 950.0],
            "optimized": [5600.0, 6300.0, 5500.0],
            "hello": [8700.0, 9600.0, 8500.0],
        },
        cpu_us={
            "legacy": [900.0, 880.0, 950.0],
            "optimized": [170.0, 160.0, 175.0],
            "hello": [110.0, 105.0, 112.0],
        },
    )
    result.checks = [judge(result, check) for check in ENDPOINTS[0].checks]
    return [result]


def test_a_run_is_written_as_json_and_markdown_and_read_back(tmp_path: Path) -> None:
    results = _stages_run()
    options = Options(dsn="postgresql://unused", token="t", rounds=3)
    path = ceiling.write(results, options, tmp_path, _CPU)
    assert path == tmp_path / "ceiling.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ceiling.json", "ceiling.md"]
    loaded, settings = ceiling.load(path)
    assert loaded == results
    assert settings["rounds"] == 3 and settings["connections"] == 32
    assert len(settings["git_commit"]) == 40  # this checkout's commit, not a placeholder
    page = (tmp_path / "ceiling.md").read_text()
    assert "| **GET /api/stages** |" in page
    speed_up, cost = results[0].checks
    assert f"{speed_up['ratio']:.2f} [{speed_up['low']:.2f}, {speed_up['high']:.2f}]" in page
    assert f"**{cost['verdict']}**" in page
    assert ceiling.summary(results, 3) in page
    assert "the host stole 5.0% of the CPU time and 12.5% was idle" in page


def test_show_prints_a_saved_run_without_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _stages_run()
    path = ceiling.write(results, Options(dsn="", token="", rounds=3), tmp_path, _CPU)
    assert main(["ceiling", "--show", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "GET /api/stages" in shown and "cost over bare hello <= 1.6" in shown
    assert ceiling.summary(results, 3) in shown
    assert "the host stole 5.0%" in shown


_NOT_A_RUN = [
    None,
    "{}",
    "[1, 2]",
    '{"results": [{"nope": 1}], "rounds": 3}',
    # A result whose check lacks its figures: the table would fail half-way.
    '{"results": [{"endpoint": "GET /x", "checks": [{"verdict": "met"}]}], "rounds": 3, '
    '"threads": 2, "connections": 32, "duration_s": 5}',
]


@pytest.mark.parametrize("content", _NOT_A_RUN)
def test_show_refuses_what_is_not_a_ceiling_json_in_one_line(
    content: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ceiling.json"
    if content is not None:
        path.write_text(content)
    assert main(["ceiling", "--show", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sixty: error:") and str(path) in err
    assert "Traceback" not in err


def test_a_failed_write_leaves_neither_file(tmp_path: Path) -> None:
    """Both files or neither: the Markdown's name taken by a folder fails the write, and
    no ceiling.json is left claiming a run."""
    (tmp_path / "ceiling.md").mkdir()
    with pytest.raises(SixtyError):
        ceiling.write(_stages_run(), Options(dsn="", token=""), tmp_path, _CPU)
    assert not (tmp_path / "ceiling.json").exists()


def test_cpu_during_a_run_is_a_share_of_all_cpu_time_without_guest_twice() -> None:
    """Shares between two readings; guest time is inside user time on Linux, so it is not
    counted again; a window with no CPU time gives zeros, not a division by zero."""
    times = type(psutil.cpu_times())
    fields = times._fields
    before = times(*([100.0] * len(fields)))
    spent = {"user": 60.0, "system": 20.0, "idle": 10.0, "steal": 10.0, "guest": 50.0}
    after = times(*(100.0 + spent.get(name, 0.0) for name in fields))
    shares = ceiling.cpu_during(before, after)
    if "steal" in fields:  # Linux
        assert shares == pytest.approx({"steal": 0.10, "idle": 0.10})
    assert ceiling.cpu_during(before, before) == {"steal": 0.0, "idle": 0.0}
