"""py-spy flame graphs of a live process (``sixty ceiling --flamegraphs``), with real
py-spy against real processes; and the ceiling's checks of its folders, duration, scale
and endpoint filter, made before anything is seeded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sixty_core.cli import main
from sixty_core.harness import flamegraphs
from sixty_core.harness.flamegraphs import FlamegraphError

#: A Python process with one recognisable function on its stack while it spins.
SPINNER = """
def spin_for_the_flamegraph_test():
    while True:
        sum(range(1000))

spin_for_the_flamegraph_test()
"""


def may_trace_siblings() -> bool:
    """py-spy attaches with ptrace: root may, and so may anyone where Yama allows it."""
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() == "0"
    except OSError:
        return True  # no Yama: ordinary ptrace rules let a user trace its own processes


needs_ptrace = pytest.mark.skipif(
    not may_trace_siblings(), reason="py-spy needs ptrace: root, or kernel.yama.ptrace_scope=0"
)


@pytest.mark.parametrize(
    ("label", "path", "expected"),
    [
        ("optimized", "/api/stages", "optimized--api-stages.svg"),
        ("hello", "/hello", "hello--hello.svg"),
        ("legacy", "/api/deals?limit=50", "legacy--api-deals-limit-50.svg"),
        (
            "optimized-no-query_cache",
            "/api/deals/{id}",
            "optimized-no-query-cache--api-deals-id.svg",
        ),
    ],
)
def test_each_side_gets_its_own_file_name(label: str, path: str, expected: str) -> None:
    assert flamegraphs.svg_name(label, path) == expected


@needs_ptrace
def test_a_flame_graph_of_a_live_process_names_its_functions(tmp_path: Path) -> None:
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
    try:
        svg = tmp_path / "graphs" / "spinner.svg"
        recording = flamegraphs.start(spinner.pid, svg, duration_s=1)
        flamegraphs.finish(recording, svg, timeout_s=30)
    finally:
        spinner.kill()
        spinner.wait()
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "spin_for_the_flamegraph_test" in text
    assert not svg.with_suffix(".log").exists()  # py-spy's output is kept only on failure


def test_a_process_py_spy_cannot_sample_is_an_error_in_py_spys_words(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    svg = tmp_path / "gone.svg"
    recording = flamegraphs.start(gone.pid, svg, duration_s=1)
    with pytest.raises(
        FlamegraphError,
        match=r"py-spy could not record gone\.svg \(exit [1-9]\d*\): Error: .*process",
    ):
        flamegraphs.finish(recording, svg, timeout_s=30)
    assert svg.with_suffix(".log").exists()  # what py-spy said, for the reader


def test_without_py_spy_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FlamegraphError, match="pip install py-spy"):
        flamegraphs.py_spy_path()


@pytest.mark.parametrize("flag", ["--out", "--flamegraphs"])
def test_sixty_ceiling_refuses_a_folder_it_cannot_make_before_seeding(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["ceiling", flag, str(a_file / "inside")]) == 1
    printed = capsys.readouterr()
    assert f"{flag} {a_file / 'inside'}: cannot create the folder" in printed.err
    assert "seed" not in printed.out  # refused before any database work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "2.5"], "whole seconds"),
        (["--scale", "0"], "--scale must be between 1 and 1000, got 0"),
        (["-k", "no such endpoint"], "no endpoint matches -k 'no such endpoint'; the endpoints"),
    ],
)
def test_sixty_ceiling_refuses_what_cannot_run_before_seeding(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ceiling", *args]) == 1
    printed = capsys.readouterr()
    assert message in printed.err
    assert "seed" not in printed.out
