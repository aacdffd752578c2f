"""Process entry points for the service and the edge upstream, and a supervisor for both.

``python -m sixty_core.harness.servers service ...`` runs the deal API under uvicorn (with
the request-head bounds of :mod:`sixty_core.api.server`);
``python -m sixty_core.harness.servers edge ...`` runs the edge upstream, which writes
deals into the same database; ``python -m sixty_core.harness.servers bare --app hello|pk``
runs one of the stack's bare limits (:mod:`sixty_core.benchkit.bare`) under the service's
own server configuration, for ceilings measured from outside. Each is its own process, so
the harness can measure the service's memory alone and kill or restart either.
:class:`Supervisor` starts both on loopback, waits (bounded) until each answers its health
check, and stops them cleanly:
SIGINT, a bounded wait, then SIGKILL. The children's output goes to log files in a
temporary directory, removed when the supervisor stops unless ``keep_logs`` is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sixty_core.db.pool import OPTIMIZED_POOL, Pool
from sixty_core.db.repository import Repository
from sixty_core.edge.upstream import DealWriter, EdgeFaults, create_edge_app
from sixty_core.errors import ConfigError, ProvisionError
from sixty_core.profiles import resolve_profile
from sixty_core.service import decode_edge_fields
from sixty_core.settings import SERVER_LOOP_ENV, Settings

DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


#: The edge's hung requests never answer (that is the fault): waiting for them at shutdown
#: only delays it, and the service's calls into them wait in turn. One second, then the
#: edge closes them and the service's own drain finishes.
EDGE_GRACEFUL_SHUTDOWN_S = 1


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=EDGE_GRACEFUL_SHUTDOWN_S,
    )


async def run_service(args: argparse.Namespace) -> None:
    from sixty_core.api import create_app
    from sixty_core.api.server import service_config

    # A process entry point, like the CLI: the environment's SIXTY_* settings apply here.
    settings = Settings.from_env(
        os.environ,
        time_scale=args.time_scale,
        edge_url=args.edge_url,
        application_name=args.application_name,
    )
    app = create_app(settings, resolve_profile(args.profile), dsn=args.dsn, edge_url=args.edge_url)
    await uvicorn.Server(service_config(app, host=args.host, port=args.port)).serve()


def make_edge_writer(repository: Repository) -> DealWriter:
    """The edge upstream's writer: decode the JSON it received, insert idempotently."""

    async def writer(fields: Mapping[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        row, _ = await repository.insert_deal(
            decode_edge_fields(fields), idempotency_key=idempotency_key
        )
        return row

    return writer


async def run_edge(args: argparse.Namespace) -> None:
    faults = EdgeFaults(
        failure_rate=args.failure_rate,
        hang_probability=args.hang_probability,
        latency_ms_median=args.latency_ms,
        latency_sigma=args.latency_sigma,
        time_scale=args.time_scale,
        seed=args.fault_seed,
    )
    async with Pool(args.dsn, OPTIMIZED_POOL, application_name="sixty_edge") as pool:
        app = create_edge_app(make_edge_writer(Repository(pool)), faults)
        await uvicorn.Server(_uvicorn_config(app, args.host, args.port)).serve()


async def run_bare(args: argparse.Namespace) -> None:
    from sixty_core.api.server import service_config
    from sixty_core.benchkit.bare import hello_app, pk_lookup_app

    if args.app == "hello":
        config = service_config(hello_app(), host=args.host, port=args.port, lifespan="off")
        await uvicorn.Server(config).serve()
        return
    async with pk_lookup_app(args.dsn) as app:
        config = service_config(app, host=args.host, port=args.port, lifespan="off")
        await uvicorn.Server(config).serve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sixty_core.harness.servers")
    sub = parser.add_subparsers(dest="which", required=True)
    service = sub.add_parser("service", help="the deal API")
    edge = sub.add_parser("edge", help="the edge upstream")
    for p in (service, edge):
        p.add_argument("--dsn", required=True)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--time-scale", type=float, default=1.0)
    service.add_argument("--profile", default="optimized")
    service.add_argument("--edge-url", required=True)
    service.add_argument("--application-name", default="sixty")
    edge.add_argument("--failure-rate", type=float, default=0.0)
    edge.add_argument("--hang-probability", type=float, default=0.0)
    edge.add_argument("--latency-ms", type=float, default=0.0)
    edge.add_argument("--latency-sigma", type=float, default=0.0)
    edge.add_argument("--fault-seed", type=int, default=None)
    bare = sub.add_parser("bare", help="a bare limit: Starlette hello, or an asyncpg pk lookup")
    bare.add_argument("--app", choices=("hello", "pk"), required=True)
    bare.add_argument("--dsn", default="", help="for --app pk: the seeded database")
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one server until SIGINT/SIGTERM; 0 when it stopped, 2 on a bad setting."""
    from sixty_core.api.server import server_loop_factory

    args = build_parser().parse_args(argv)
    serve = {"service": run_service, "edge": run_edge, "bare": run_bare}[args.which]
    try:
        loop_factory = server_loop_factory(os.environ)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as run:
        run.run(serve(args))
    return 0


# --- child processes ----------------------------------------------------------------------


#: How a server process is started: the module after ``python``.
SERVERS_MODULE: tuple[str, ...] = ("-m", "sixty_core.harness.servers")
#: How a launcher starts memray; :func:`spawn_server` knows a traced server by it.
_MEMRAY: tuple[str, ...] = ("-m", "memray")


def memray_launcher(
    capture: Path, *, aggregate: bool = False, trace_python_allocators: bool = False
) -> tuple[str, ...]:
    """The launcher that runs a server under ``memray run`` into ``capture`` (overwritten):
    ``aggregate`` keeps only what the peak and leak reports need (a small file, no
    timeline); ``trace_python_allocators`` records every pymalloc allocation and free,
    memray's leak mode for Python code."""
    flags = ["--aggregate"] * aggregate + ["--trace-python-allocators"] * trace_python_allocators
    return (*_MEMRAY, "run", *flags, "-q", "-f", "-o", str(capture), *SERVERS_MODULE)


def spawn_server(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    launcher: Sequence[str] = SERVERS_MODULE,
) -> subprocess.Popen[bytes]:
    """Start ``python LAUNCHER ARGS`` (by default ``python -m sixty_core.harness.servers
    ARGS``; a tracer may wrap it, e.g. ``-m memray run ... -m sixty_core.harness.servers``)
    with its output in ``log_path`` (a file, never a pipe nobody reads: a full pipe blocks
    the child). Under memray the server runs on asyncio's loop unless ``env`` says
    otherwise: memray's stacks lose the frames that uvloop's callbacks run."""
    traced = {SERVER_LOOP_ENV: "asyncio"} if tuple(launcher[:2]) == _MEMRAY else {}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, *launcher, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **traced, **(env or {})},
        )


def wait_answering(
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    log_path: Path,
    timeout_s: float,
    *,
    ok: Collection[int] = (200,),
) -> None:
    """Return once ``url`` answers with a status in ``ok``; ProvisionError with the child's
    last output if it exits first, or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text(errors="replace")
            raise ProvisionError(
                f"the {name} process exited with code {process.returncode}:\n{output[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code in ok:
                return
        time.sleep(0.1)
    raise ProvisionError(
        f"the {name} process did not become healthy within {timeout_s:.0f} s ({url})"
    )


def stop_processes(
    processes: Iterable[subprocess.Popen[bytes]], timeout_s: float = DEFAULT_STOP_TIMEOUT_S
) -> None:
    """SIGINT every process still running, wait up to ``timeout_s`` in all, then SIGKILL."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- supervisor ---------------------------------------------------------------------------


@dataclass
class EdgeOptions:
    """Faults injected into the edge upstream (see :class:`sixty_core.edge.EdgeFaults`)."""

    failure_rate: float = 0.0
    hang_probability: float = 0.0
    latency_ms: float = 0.0
    latency_sigma: float = 0.0
    seed: int | None = None


@dataclass
class Supervisor:
    """Starts the edge upstream and the service as child processes on loopback.

    ``start()`` returns once both answer their health checks, or raises ProvisionError
    (with the child's last output) after ``start_timeout_s``. ``stop()`` always ends both.
    """

    dsn: str
    profile: str
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    port: int | None = None
    edge_port: int | None = None
    edge: EdgeOptions = field(default_factory=EdgeOptions)
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    log_dir: Path | None = None
    keep_logs: bool = False
    test_faults: frozenset[str] = frozenset()
    #: How the service process is started, and extra environment for it (a tracer).
    service_launcher: tuple[str, ...] = SERVERS_MODULE
    service_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _own_log_dir: bool = field(default=False, init=False)

    @property
    def service_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def edge_url(self) -> str:
        """The edge upstream's root URL (its routes live under /functions/v1)."""
        return f"http://{self.host}:{self.edge_port}"

    def start(self) -> None:
        self.port = self.port or free_port(self.host)
        self.edge_port = self.edge_port or free_port(self.host)
        try:
            self._spawn(
                "edge",
                [
                    "edge",
                    "--dsn",
                    self.dsn,
                    "--host",
                    self.host,
                    "--port",
                    str(self.edge_port),
                    "--time-scale",
                    str(self.time_scale),
                    "--failure-rate",
                    str(self.edge.failure_rate),
                    "--hang-probability",
                    str(self.edge.hang_probability),
                    "--latency-ms",
                    str(self.edge.latency_ms),
                    "--latency-sigma",
                    str(self.edge.latency_sigma),
                    *(["--fault-seed", str(self.edge.seed)] if self.edge.seed is not None else []),
                ],
            )
            self._wait_healthy("edge", f"{self.edge_url}/functions/v1/health")
            self._spawn(
                "service",
                [
                    "service",
                    "--dsn",
                    self.dsn,
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--time-scale",
                    str(self.time_scale),
                    "--profile",
                    self.profile,
                    "--edge-url",
                    self.edge_url,
                ],
            )
            self._wait_healthy("service", f"{self.service_url}/api/health")
        except BaseException:
            self.stop()
            raise

    def log_path(self, name: str) -> Path:
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="sixty-serve-"))
            self._own_log_dir = True
        return self.log_dir / f"{name}.log"

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {}
        launcher = SERVERS_MODULE
        if name == "service":
            env.update(self.service_env)
            launcher = self.service_launcher
            if self.test_faults:
                env["SIXTY_TEST_FAULTS"] = ",".join(sorted(self.test_faults))
        self.processes[name] = spawn_server(args, self.log_path(name), env=env, launcher=launcher)

    def _wait_healthy(self, name: str, url: str) -> None:
        wait_answering(name, self.processes[name], url, self.log_path(name), self.start_timeout_s)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """SIGINT every child, wait up to ``timeout_s``, then SIGKILL what is left; remove
        the log directory this supervisor made, unless ``keep_logs``."""
        stop_processes(self.processes.values(), timeout_s)
        self.processes.clear()
        if self._own_log_dir and not self.keep_logs and self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None
            self._own_log_dir = False

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
