"""Run folders: where a command writes its results, never over an earlier run's, and
files written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from sixty_core.errors import SixtyError


def new_run_dir(kind: str, root: Path = Path("reports") / "runs") -> Path:
    """A fresh ``reports/runs/<UTC stamp>-<kind>`` path (not created)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return (root / f"{stamp}-{kind}").resolve()


def make_folder(folder: Path, flag: str = "--out") -> None:
    """Create ``folder`` with its parents, or find it there; SixtyError naming ``flag``
    (the option that gave the path) when it cannot be made or written to: a path through
    a file, a missing permission, a read-only disk. Commands call it before their work, so
    such a path costs nothing measured."""
    if folder.exists() and not folder.is_dir():
        raise SixtyError(f"{flag} {folder} is a file: give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SixtyError(
            f"{flag} {folder}: cannot create the folder ({exc.strerror or exc})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SixtyError(f"{flag} {folder}: the folder is not writable")


def check_output_file(path: Path, flag: str) -> None:
    """Make sure ``path`` can be written later: its folder made (:func:`make_folder`), and
    the path itself not a folder nor a file this user cannot write; SixtyError naming
    ``flag`` otherwise. Nothing is written to ``path`` itself."""
    if path.is_dir():
        raise SixtyError(f"{flag} {path} is a folder: give a file path")
    make_folder(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise SixtyError(f"{flag} {path}: the file is not writable")


def prepare_run_dir(out: Path) -> None:
    """Create ``out``; SixtyError if it already holds anything (runs never overwrite) or
    cannot be made (:func:`make_folder`)."""
    if out.is_dir() and any(out.iterdir()):
        raise SixtyError(f"{out} is not empty: give a new --out directory (runs never overwrite)")
    make_folder(out)


def write_whole(files: Mapping[Path, str | bytes]) -> None:
    """Write every file of ``files`` whole: all go to temporary files first and are
    renamed into place only when every one was written, so a full disk or a missing
    permission leaves what was there before (SixtyError naming the file). Text is written
    as UTF-8, bytes as they are."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, text in files.items():
            partial = path.with_name(f".{path.name}.partial")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(text, bytes):
                    partial.write_bytes(text)
                else:
                    partial.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise SixtyError(f"{path}: cannot write it ({exc.strerror})") from None
            staged.append((partial, path))
        for partial, path in staged:
            try:
                partial.replace(path)
            except OSError as exc:
                raise SixtyError(f"{path}: cannot write it ({exc.strerror})") from None
    finally:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)
