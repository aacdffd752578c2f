"""The ``container`` backend: one Postgres in Docker via testcontainers, and its removal.

:func:`start_container` returns a :class:`ContainerHandle` whose ``dsn`` reaches the server
from this host and whose ``stop()`` removes the container. Two network modes:

``network="host"``
    the container shares the host's network stack; postgres listens on 127.0.0.1 only, on a
    free port picked here (``PGPORT`` and ``-p``), so no traffic leaves loopback and no port
    mapping (docker-proxy) is involved. Needs a Linux engine on this host.
any other value (``None``, ``"bridge"`` or a network name)
    the usual port mapping: container port 5432 published on the engine host, bound to
    127.0.0.1 when the engine is local.

Quirks of testcontainers 4.15 this module works around (subclass below):

* ``get_exposed_port`` asks Docker for a port mapping, which does not exist with host
  networking (it raises ``ConnectionError``); we return the chosen port.
* ``get_container_host_ip`` returns the default gateway's address when ``/.dockerenv`` exists,
  even if the engine runs beside us; for a local engine we return 127.0.0.1.
* ``PostgresContainer`` waits by ``docker exec``-ing ``psql ... -c 'select version();'`` for up
  to 120 s, even after the container died; our wait stops at once when it exits and honours
  ``startup_timeout_s`` and an injected clock.
* images are pulled inside ``start()`` with no way to tell the failure apart; we look the image
  up (and pull it) first, so a missing image becomes :class:`ImageUnavailableError`.

Failure modes: no engine -> :class:`DockerUnavailableError`; image neither local nor pullable
(also the Ryuk reaper's image unless ``TESTCONTAINERS_RYUK_DISABLED=true``) ->
:class:`ImageUnavailableError`; anything else (container exits, not ready in time, API error)
-> :class:`ProvisionError`. A container that was created is removed before any error
propagates. Messages never contain the password.
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.config import testcontainers_config
from testcontainers.core.docker_client import get_docker_host

from sixty_core.errors import DockerUnavailableError, ImageUnavailableError, ProvisionError
from sixty_core.settings import DEFAULT_PG_IMAGE
from sixty_core.types import Clock

__all__ = [
    "CONTAINER_LABEL",
    "DEFAULT_PG_IMAGE",
    "HOST_NETWORK",
    "OFFLINE_PG_IMAGE",
    "ContainerHandle",
    "docker_available",
    "start_container",
]

DEFAULT_USER = "sixty"
DEFAULT_DBNAME = "sixty"
#: Bound on the time from ``docker create`` until psql inside the container gets an answer.
DEFAULT_STARTUP_TIMEOUT_S = 120.0
#: Bound on each Docker API request (a pull streams, so this bounds its silences).
DEFAULT_DOCKER_TIMEOUT_S = 60.0
#: Bound on :func:`docker_available`.
DEFAULT_PROBE_TIMEOUT_S = 5.0
#: Pause between two readiness checks.
DEFAULT_POLL_INTERVAL_S = 0.5
#: The image ``scripts/build-offline-postgres-image.sh`` builds from Debian packages.
OFFLINE_PG_IMAGE = "sixty/postgres:15-offline"
HOST_NETWORK = "host"
#: Label on every container started here; ``scripts/ci-docker.sh`` sweeps containers by it.
CONTAINER_LABEL = "sixty.harness"

_PG_PORT = 5432
_LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 20
_DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

_NO_DOCKER_HINT = (
    "the container backend needs a Docker engine; use --db embedded (the default, no Docker "
    "needed) or --db url with SIXTY_DATABASE_URL=postgresql://..., or start Docker "
    "(on a host without one: source scripts/ci-docker.sh; sixty_docker_up)"
)
_NO_IMAGE_HINT = (
    "on a host that reaches no image registry, build the offline image with "
    "'bash scripts/build-offline-postgres-image.sh', then set "
    f"SIXTY_PG_IMAGE={OFFLINE_PG_IMAGE} SIXTY_DOCKER_NETWORK={HOST_NETWORK}"
)


def _docker_sdk() -> Any:
    # docker-py ships no type information and pyproject's mypy overrides do not list it, so
    # it is imported as an untyped module (also keeps it off the import path of other backends).
    return importlib.import_module("docker")


def docker_available(*, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> bool:
    """True if a Docker engine answers a ping within about ``timeout_s``; never raises.

    Reads the engine's address the way the docker SDK does (``DOCKER_HOST``, default socket).
    """
    if _dead_unix_socket(timeout_s) is not None:
        return False
    try:
        client = _docker_sdk().from_env(timeout=timeout_s)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _dead_unix_socket(timeout_s: float) -> str | None:
    """Why the engine's unix socket refuses connections, or None (it accepts, or is not unix).

    docker-py leaks its socket when a unix socket refuses (ResourceWarning), so we look
    first, with a socket we close.
    """
    host = get_docker_host() or _DEFAULT_DOCKER_HOST
    if not host.startswith("unix://"):
        return None
    path = host.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except OSError as exc:
            return f"cannot connect to {path}: {exc.strerror or exc}"
    return None


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ContainerHandle:
    """A running Postgres container: its ``dsn``, ``container_id`` and :meth:`stop`.

    ``dsn`` is a ``postgresql://`` URL with the password; print :attr:`redacted_dsn` instead.
    """

    def __init__(self, container: _SixtyPostgres, *, dsn: str) -> None:
        self._container = container
        self.dsn = dsn
        self.container_id: str = container.get_container_id()
        self.image: str = container.image
        self.network: str | None = container.sixty_network
        self._stopped = False

    @property
    def redacted_dsn(self) -> str:
        parts = urlsplit(self.dsn)
        if parts.password is None:
            return self.dsn
        return self.dsn.replace(f":{parts.password}@", ":***@", 1)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Remove the container (forced, with its anonymous volumes); idempotent.

        A container that is already gone counts as removed. Any other failure raises
        :class:`ProvisionError` naming the container so it can be removed by hand.
        """
        if self._stopped:
            return
        self._stopped = True
        _remove(self._container)

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<ContainerHandle {self.container_id[:12]} {self.redacted_dsn} {state}>"


class _SixtyPostgres(PostgresContainer):
    """PostgresContainer with host networking, a loopback DSN and a bounded readiness wait."""

    def __init__(
        self,
        *,
        image: str,
        network: str | None,
        user: str,
        password: str,
        dbname: str,
        docker_timeout_s: float,
        wait: Callable[[_SixtyPostgres], None],
    ) -> None:
        super().__init__(
            image=image,
            username=user,
            password=password,
            dbname=dbname,
            driver=None,
            docker_client_kw={"timeout": docker_timeout_s},
        )
        self.sixty_network = network
        self._wait = wait
        self._local_engine = _engine_is_local(self.get_docker_client().client)
        kwargs: dict[str, Any] = {"labels": {CONTAINER_LABEL: "container-backend"}}
        if network == HOST_NETWORK:
            self.host_port: int = free_loopback_port()
            # No port mapping exists with host networking: expose nothing, and make postgres
            # listen where we want. PGPORT also steers psql inside the container (the
            # readiness check) and the official image's init scripts.
            self.ports = {}
            self.with_env("PGPORT", str(self.host_port))
            self.with_command(
                ["postgres", "-c", f"listen_addresses={_LOOPBACK}", "-p", str(self.host_port)]
            )
            kwargs["network"] = HOST_NETWORK
        else:
            self.host_port = 0
            if self._local_engine:
                # Published on 127.0.0.1 only; the engine picks the host port. (docker-py
                # takes an (ip,) tuple here; testcontainers' annotation only knows ports.)
                published: dict[str, Any] = {f"{_PG_PORT}/tcp": (_LOOPBACK,)}
                self.ports = published
            if network and network != "bridge":
                kwargs["network"] = network
        self.with_kwargs(**kwargs)
        self.with_name(f"sixty-pg-{secrets.token_hex(4)}")

    @property
    def internal_port(self) -> int:
        return self.host_port if self.sixty_network == HOST_NETWORK else _PG_PORT

    def get_container_host_ip(self) -> str:
        if self._local_engine and not testcontainers_config.tc_host_override:
            return _LOOPBACK
        return str(super().get_container_host_ip())

    def get_exposed_port(self, port: int) -> int:
        if self.sixty_network == HOST_NETWORK:
            return self.host_port
        return int(super().get_exposed_port(port))

    def _connect(self) -> None:
        # Called by DbContainer.start() once the container runs.
        self._wait(self)


def _engine_is_local(client: Any) -> bool:
    """True if the docker client talks to an engine on this host (unix socket or loopback)."""
    base_url = str(client.api.base_url)
    if base_url.startswith("http+docker://"):  # unix socket or named pipe
        return True
    host = urlsplit(base_url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1")


def start_container(
    *,
    image: str,
    network: str | None,
    user: str = DEFAULT_USER,
    password: str | None = None,
    dbname: str = DEFAULT_DBNAME,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    docker_timeout_s: float = DEFAULT_DOCKER_TIMEOUT_S,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ContainerHandle:
    """Start Postgres from ``image`` and return a handle once it answers a query.

    ``password`` defaults to a random one. Blocking (run it in a thread from async code);
    bounded by ``startup_timeout_s`` for readiness and ``docker_timeout_s`` per Docker call.
    Raises :class:`DockerUnavailableError`, :class:`ImageUnavailableError` or
    :class:`ProvisionError` (see the module docstring); never leaves a container behind.
    """
    sdk = _docker_sdk()
    password = password if password is not None else secrets.token_urlsafe(18)

    def wait(container: _SixtyPostgres) -> None:
        wait_until_ready(
            container.get_wrapped_container(),
            command=_psql_command(user, dbname, container.internal_port),
            environment={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            timeout_s=startup_timeout_s,
            poll_interval_s=poll_interval_s,
            clock=clock,
            sleep=sleep,
        )

    dead = _dead_unix_socket(DEFAULT_PROBE_TIMEOUT_S)
    if dead is not None:
        raise DockerUnavailableError(f"Docker is not reachable ({dead}); {_NO_DOCKER_HINT}")
    try:
        container = _SixtyPostgres(
            image=image,
            network=network,
            user=user,
            password=password,
            dbname=dbname,
            docker_timeout_s=docker_timeout_s,
            wait=wait,
        )
    except sdk.errors.DockerException as exc:
        raise DockerUnavailableError(
            f"Docker is not reachable ({_reason(exc)}); {_NO_DOCKER_HINT}"
        ) from None
    try:
        client = container.get_docker_client().client
        _ensure_image(client, container.image, hint=_NO_IMAGE_HINT)
        if not testcontainers_config.ryuk_disabled:
            _ensure_image(
                client,
                testcontainers_config.ryuk_image,
                hint="it is testcontainers' reaper; set TESTCONTAINERS_RYUK_DISABLED=true "
                "to run without it (the harness removes its containers itself)",
            )
        container.start()
        dsn = _dsn(user, password, container.get_container_host_ip(), container, dbname)
        return ContainerHandle(container, dsn=dsn)
    except BaseException as exc:
        # Never leave a half-started container behind, whatever went wrong (also ^C).
        with contextlib.suppress(ProvisionError):
            _remove(container)
        if isinstance(exc, ProvisionError) or not isinstance(exc, Exception):
            raise
        if _is_unreachable(exc):
            raise DockerUnavailableError(
                f"Docker stopped answering ({_reason(exc)}); {_NO_DOCKER_HINT}"
            ) from None
        raise ProvisionError(
            f"the postgres container from {image} did not start: {_reason(exc, password)}"
        ) from None


def wait_until_ready(
    container: Any,
    *,
    command: list[str],
    environment: dict[str, str],
    timeout_s: float,
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run ``command`` in ``container`` (a docker SDK container) until it exits 0.

    Raises :class:`ProvisionError` at once if the container stops running (with its last log
    lines), or once ``timeout_s`` has passed on ``clock`` (with the command's last output).
    """
    deadline = clock() + timeout_s
    last_output = "no attempt finished"
    while True:
        container.reload()
        if container.status not in ("created", "running"):
            raise ProvisionError(
                f"the postgres container stopped (status {container.status}) before it was ready; "
                f"last log lines:\n{_log_tail(container)}"
            )
        try:
            exit_code, output = container.exec_run(command, environment=environment)
        except Exception as exc:
            # The engine refuses exec while the container is still being set up.
            last_output = _reason(exc)
        else:
            if exit_code == 0:
                return
            last_output = _decode(output).strip() or f"exit code {exit_code}"
        if clock() >= deadline:
            raise ProvisionError(
                f"the postgres container was not ready within {timeout_s:g} s; last check: "
                f"{last_output}; last log lines:\n{_log_tail(container)}"
            )
        sleep(poll_interval_s)


def _psql_command(user: str, dbname: str, port: int) -> list[str]:
    # An argv, not a shell line: no quoting, and the password travels in the environment.
    return [
        "psql",
        "--no-psqlrc",
        "--quiet",
        "--tuples-only",
        f"--username={user}",
        f"--dbname={dbname}",
        f"--host={_LOOPBACK}",
        f"--port={port}",
        "--command=select version();",
    ]


def _ensure_image(client: Any, image: str, *, hint: str) -> None:
    """Make ``image`` local, pulling it if needed; ImageUnavailableError if that fails."""
    errors = _docker_sdk().errors
    try:
        client.images.get(image)
        return
    except errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except (errors.APIError, errors.DockerException) as exc:
        raise ImageUnavailableError(
            f"Docker image {image} is neither local nor pullable ({_reason(exc)}); {hint}"
        ) from None


def _remove(container: _SixtyPostgres) -> None:
    errors = _docker_sdk().errors
    # testcontainers' get_wrapped_container() raises before start(); read the field itself.
    wrapped = container._container
    name = wrapped.id[:12] if wrapped is not None else "?"
    try:
        if wrapped is not None:
            wrapped.remove(force=True, v=True)
    except errors.NotFound:
        pass
    except Exception as exc:
        raise ProvisionError(
            f"could not remove postgres container {name} ({_reason(exc)}); "
            f"remove it with: docker rm -f {name}"
        ) from None
    finally:
        container.get_docker_client().client.close()


def _dsn(user: str, password: str, host: str, container: _SixtyPostgres, dbname: str) -> str:
    port = container.get_exposed_port(_PG_PORT)
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/" + quote(
        dbname, safe=""
    )


def _is_unreachable(exc: BaseException) -> bool:
    # docker-py lets requests' connection errors through from every call but the first.
    requests_exceptions = importlib.import_module("requests.exceptions")
    return isinstance(exc, requests_exceptions.ConnectionError)


def _log_tail(container: Any) -> str:
    try:
        logs = _decode(container.logs(tail=_LOG_TAIL_LINES))
    except Exception as exc:
        return f"(logs unavailable: {_reason(exc)})"
    return logs.rstrip() or "(no output)"


def _decode(data: Any) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _reason(exc: BaseException, secret: str | None = None) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.replace(secret, "***") if secret else text
