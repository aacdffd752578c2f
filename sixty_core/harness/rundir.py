"""Run folders: where a command writes its results, never over an earlier run's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sixty_core.errors import SixtyError


def new_run_dir(kind: str, root: Path = Path("reports") / "runs") -> Path:
    """A fresh ``reports/runs/<UTC stamp>-<kind>`` path (not created)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return (root / f"{stamp}-{kind}").resolve()


def prepare_run_dir(out: Path) -> None:
    """Create ``out``; SixtyError if it already holds anything (runs never overwrite)."""
    if out.exists() and any(out.iterdir()):
        raise SixtyError(f"{out} is not empty: give a new --out directory (runs never overwrite)")
    out.mkdir(parents=True, exist_ok=True)
