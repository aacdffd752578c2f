"""``sixty bench``: run the pytest-benchmark suites in ``bench/`` with timing on.

The suites run in a child ``python -m pytest`` (they own an event loop; the command line's
own loop must not be running around them) with its output in ``DIR/bench.log`` and a
progress file read for the progress bar. pytest-benchmark writes its JSON to a temporary
name that is renamed to ``DIR/bench.json`` only when every suite passed, so a failed run
never leaves a result that looks whole. ``DIR/bench.md`` holds the table in Markdown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import sixty_core
from sixty_core.benchkit import summary
from sixty_core.benchkit.progress import PROGRESS_ENV
from sixty_core.errors import SixtyError
from sixty_core.harness.rundir import make_folder, new_run_dir

#: The whole run is bounded: a suite that hangs is killed, and the run fails.
DEFAULT_TIMEOUT_S = 1800.0


class BenchError(SixtyError):
    """The suites could not run or did not all pass."""


@dataclass(frozen=True)
class Budget:
    """How long each benchmark is timed (pytest-benchmark's and the interleaving's knobs)."""

    min_time_s: float
    max_time_s: float
    rounds: int
    min_batch_ms: float


QUICK = Budget(min_time_s=0.0002, max_time_s=0.25, rounds=8, min_batch_ms=2.0)
FULL = Budget(min_time_s=0.0005, max_time_s=1.0, rounds=25, min_batch_ms=10.0)


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False
    profiles: tuple[str, ...] = ("legacy", "optimized")
    out: Path | None = None
    keyword: str | None = None
    suites: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def find_suites(explicit: Path | None) -> Path:
    """The ``bench/`` folder: ``explicit``, else the one beside this package's source."""
    suites = explicit or sixty_core.SOURCE_ROOT / "bench"
    if not (suites / "conftest.py").is_file():
        raise BenchError(
            f"no benchmark suites at {suites} (bench/conftest.py): run from a clone of the "
            "repository (pip install -e .) or pass --suites DIR"
        )
    return suites.resolve()


def _command(options: BenchOptions, suites: Path, json_path: Path) -> list[str]:
    budget = QUICK if options.quick else FULL
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(suites),
        "-p",
        "sixty_core.benchkit.progress",
        "-p",
        "no:cacheprovider",
        "--benchmark-enable",
        f"--benchmark-json={json_path}",
        f"--benchmark-min-time={budget.min_time_s}",
        f"--benchmark-max-time={budget.max_time_s}",
        f"--sixty-rounds={budget.rounds}",
        f"--sixty-min-batch-ms={budget.min_batch_ms}",
        f"--sixty-profiles={','.join(options.profiles)}",
        "--timeout=600",
        "-q",
        "-rfE",
        "--tb=short",
    ]
    if options.keyword:
        command += ["-k", options.keyword]
    return command


def _events(path: Path, seen: int) -> tuple[list[dict[str, Any]], int]:
    """Progress events written since line ``seen`` (a half-written last line waits)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        return [], seen
    events: list[dict[str, Any]] = []
    for line in lines[seen:]:
        if not line.endswith("\n"):
            break
        events.append(json.loads(line))
        seen += 1
    return events, seen


def run_bench(options: BenchOptions, console: Console) -> Path:
    """Run the suites; return ``DIR/bench.json``. BenchError (with the log's path) if a
    suite fails, the run times out, or ``DIR`` already holds a bench.json."""
    suites = find_suites(options.suites)
    out = (options.out or new_run_dir("bench")).resolve()
    final = out / "bench.json"
    if final.exists():
        raise BenchError(f"{final} exists; choose another --out (results are never overwritten)")
    make_folder(out)
    partial = out / ".bench.json.partial"
    progress_file = out / ".progress"
    log = out / "bench.log"
    for stale in (partial, progress_file):
        stale.unlink(missing_ok=True)
    env = {**os.environ, PROGRESS_ENV: str(progress_file)}
    command = _command(options, suites, partial)
    failed: list[str] = []
    with (
        log.open("w") as sink,
        Progress(
            TextColumn("[bold]bench[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=False,
        ) as bar,
    ):
        task = bar.add_task("collecting", total=None)
        process = subprocess.Popen(
            command, cwd=suites.parent, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + options.timeout_s
        seen = 0
        collected: int | None = None
        try:
            while True:
                finished = process.poll() is not None
                events, seen = _events(progress_file, seen)
                for event in events:
                    if "total" in event:
                        collected = event["total"]
                        bar.update(task, total=collected, description="")
                    elif "done" in event:
                        name = event["done"].split("::")[-1]
                        # Test ids hold brackets ([/api/stages]): not markup.
                        bar.update(task, advance=1, description=escape(name))
                        if event["outcome"] == "failed":
                            failed.append(event["done"])
                    elif "error" in event:
                        failed.append(event["error"])
                if finished:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"the suites ran longer than {options.timeout_s:.0f} s and were "
                        f"stopped; see {log}"
                    )
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    progress_file.unlink(missing_ok=True)
    if collected == 0:
        partial.unlink(missing_ok=True)
        if options.keyword:
            raise BenchError(
                f"no benchmark matches -k {options.keyword!r}: -k takes pytest's expressions "
                "of test names, e.g. -k caches or -k 'uncached_get_deal or move_deal'; "
                f"full log: {log}"
            )
        raise BenchError(f"the suites at {suites} hold no benchmark; full log: {log}")
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        what = f"{len(failed)} failed: {', '.join(failed)}" if failed else "pytest failed"
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise BenchError(
            f"bench suites did not pass (exit {process.returncode}; {what}); "
            f"full log: {log}\n{tail}"
        )
    if not partial.exists():
        raise BenchError(f"pytest ran no benchmark (check -k); full log: {log}")
    partial.rename(final)
    (out / "bench.md").write_text(summary.markdown(summary.load(final)))
    return final
