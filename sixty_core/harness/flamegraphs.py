"""py-spy flame graphs of a server process while it is under load.

``sixty ceiling --flamegraphs DIR`` records one per side of each endpoint, so the question
the ceiling's ratios raise (where does the optimized side spend its time that the bare
hello does not?) is answered from the same servers, under the same wrk load, in the same
run. py-spy pauses the process for each sample (without that, its stacks come out torn
mid-update and the graph falls apart into fragments), which slows it: the recording runs
are never among the measured ones.

py-spy reads another process's memory, so it needs ptrace permission on it: root, or a
kernel that lets a user trace its own processes (``kernel.yama.ptrace_scope = 0``). A
failure says so instead of leaving an empty file.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

from sixty_core.errors import SixtyError

#: Samples per second: py-spy's default is 100; a 5 s run at 250 gives about 1,250 samples.
SAMPLE_RATE_HZ = 250
#: How long py-spy may take past its sampling window to write the SVG.
WRITE_TIMEOUT_S = 30.0


class FlamegraphError(SixtyError):
    """py-spy is missing, or it could not attach to or sample a server."""


def py_spy_path() -> str:
    """The py-spy beside this Python (a venv's bin), else on PATH; FlamegraphError if none."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file():
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise FlamegraphError(
            "--flamegraphs needs py-spy: pip install py-spy (it is in the project's test extras)"
        )
    return found


def svg_name(label: str, path: str) -> str:
    """A file name for the side ``label`` serving ``path``: ``optimized--api-stages.svg``."""

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")

    return f"{slug(label)}--{slug(path)}.svg"


def start(pid: int, svg: Path, *, duration_s: float) -> subprocess.Popen[bytes]:
    """Start sampling process ``pid`` for ``duration_s`` (rounded up to whole seconds, as
    py-spy counts them) into the flame graph ``svg``; :func:`finish` waits for it."""
    svg.parent.mkdir(parents=True, exist_ok=True)
    seconds = max(1, math.ceil(duration_s))
    log = svg.with_suffix(".log")
    with log.open("wb") as output:
        return subprocess.Popen(
            [
                py_spy_path(),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                str(SAMPLE_RATE_HZ),
                "--format",
                "flamegraph",
                "--function",  # one frame per function, not per line: a readable graph
                "--output",
                str(svg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def finish(process: subprocess.Popen[bytes], svg: Path, *, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the recording ``process`` to write ``svg``; its log is
    removed when it did. FlamegraphError with py-spy's own words when it failed (no
    permission to trace, the process gone) or hung (it is killed)."""
    log = svg.with_suffix(".log")
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise FlamegraphError(
            f"py-spy did not finish {svg.name} within {timeout_s:.0f} s (its output: {log})"
        ) from None
    except BaseException:  # Ctrl-C while waiting: py-spy must not outlive the run
        process.kill()
        process.wait()
        raise
    said = log.read_text(errors="replace").strip() if log.exists() else ""
    if process.returncode != 0 or not svg.is_file() or svg.stat().st_size == 0:
        raise FlamegraphError(
            f"py-spy could not record {svg.name} (exit {process.returncode}): "
            f"{_reason(said)} (its whole output: {log})"
        )
    log.unlink(missing_ok=True)


def _reason(said: str) -> str:
    """py-spy's error line (it prints ``Error: ...`` then causes and a backtrace), with how
    to get the permission when that is what it lacked."""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("Error:")), None)
    reason = reason or (lines[0] if lines else "it printed nothing")
    if "permission" in said.lower() or "not permitted" in said.lower():
        reason += "; py-spy needs ptrace permission: run as root, or set kernel.yama.ptrace_scope=0"
    return reason
