"""Raw request samples: one line per request, written by every Locust process to a file
of its own, merged afterwards. Percentiles and failure rates are computed from these, never
from Locust's rounded statistics.

A line is a JSON array (msgspec ``array_like``), in :class:`Sample` field order. Files are
named ``samples-<host>-<pid>.jsonl`` so worker processes on one or many machines never
share one. A process killed mid-write leaves at most one torn last line; :func:`read_dir`
skips it and says so.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

#: Request type of the samples that time a whole user action (several requests), such as
#: the wizard's create. They are reported beside the requests, never counted among them.
ACTION = "ACTION"


class Sample(msgspec.Struct, array_like=True, frozen=True):
    """One request (or one user action when ``kind == ACTION``).

    ``t``: wall-clock start, seconds since the epoch; ``ms``: latency in milliseconds
    (sub-millisecond precision); ``status``: HTTP status, 0 when no response came;
    ``reason``: why it failed (None when ``ok``); ``created``: deal rows the action
    created as far as the client saw (for actions; 0 otherwise).
    """

    t: float
    kind: str
    name: str
    ms: float
    ok: bool
    status: int
    bytes: int
    reason: str | None
    user: str
    created: int = 0


class SampleWriter:
    """Appends samples to ``directory/samples-<host>-<pid>.jsonl``; the file is created on
    the first sample. Buffered: :meth:`flush` at the end of a run (and at exit)."""

    FLUSH_EVERY = 2000

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"samples-{socket.gethostname()}-{os.getpid()}.jsonl"
        self.count = 0
        self._file: IO[bytes] | None = None
        self._encoder = msgspec.json.Encoder()

    def write(self, sample: Sample) -> None:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(self._encoder.encode(sample) + b"\n")
        self.count += 1
        if self.count % self.FLUSH_EVERY == 0:
            self._file.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SampleSet(msgspec.Struct):
    """Every sample of a run, merged from its files, in time order."""

    samples: list[Sample]
    files: list[str]
    torn_lines: int = 0


def sample_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("samples-*.jsonl"))


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line


def read_dir(directory: Path) -> SampleSet:
    """Merge every samples file in ``directory``. A line that does not decode is skipped
    and counted only if it is a file's last (a torn write); anywhere else it is corrupt
    data and raises ValueError naming the file and line."""
    decoder = msgspec.json.Decoder(Sample)
    samples: list[Sample] = []
    files = sample_files(directory)
    torn = 0
    for path in files:
        lines = list(_lines(path))
        for number, line in enumerate(lines, 1):
            try:
                samples.append(decoder.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if number == len(lines):
                    torn += 1
                    continue
                raise ValueError(f"{path}:{number}: not a sample line: {exc}") from None
    samples.sort(key=lambda s: s.t)
    return SampleSet(samples=samples, files=[p.name for p in files], torn_lines=torn)
