"""The container backend: a real Postgres in Docker, its removal, and its error messages.

Tests marked ``container`` need a Docker engine and skip without one (CI starts one with
``scripts/ci-docker.sh``). The image is ``SIXTY_PG_IMAGE`` (default ``postgres:16``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from testcontainers.core.config import testcontainers_config

from sixty_core.db import _container
from sixty_core.db._container import (
    CONTAINER_LABEL,
    DEFAULT_PG_IMAGE,
    HOST_NETWORK,
    docker_available,
    start_container,
    wait_until_ready,
)
from sixty_core.errors import DockerUnavailableError, ImageUnavailableError, ProvisionError
from tests.conftest import need_docker

IMAGE = os.environ.get("SIXTY_PG_IMAGE") or DEFAULT_PG_IMAGE


@pytest.fixture
def docker_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A docker SDK client; skips the test when no engine answers (fails under CI)."""
    need_docker()
    # These tests check removal themselves; the Ryuk reaper's image may not be pullable here.
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    import docker

    client = docker.from_env(timeout=30)
    yield client
    client.close()


def _container_ids(client: Any) -> set[str]:
    return {c.id for c in client.containers.list(all=True)}


@pytest.mark.container
@pytest.mark.parametrize("network", [HOST_NETWORK, None], ids=["host", "port-mapping"])
async def test_container_answers_on_loopback_and_is_gone_after_stop(
    docker_engine: Any, network: str | None
) -> None:
    """A started container serves queries on 127.0.0.1 and stop() removes it (twice is fine)."""
    handle = await asyncio.to_thread(start_container, image=IMAGE, network=network)
    try:
        assert handle.dsn.startswith("postgresql://sixty:")
        assert "@127.0.0.1:" in handle.dsn
        assert handle.container_id in _container_ids(docker_engine)
        attrs = docker_engine.containers.get(handle.container_id).attrs
        assert attrs["Config"]["Labels"][CONTAINER_LABEL] == "container-backend"
        conn = await asyncpg.connect(handle.dsn, timeout=10, command_timeout=10)
        try:
            assert await conn.fetchval("select 1") == 1
            listen = await conn.fetchval("show listen_addresses")
        finally:
            await conn.close()
        if network == HOST_NETWORK:
            assert attrs["HostConfig"]["NetworkMode"] == "host"
            assert listen == "127.0.0.1"
    finally:
        await asyncio.to_thread(handle.stop)
    assert handle.stopped
    assert handle.container_id not in _container_ids(docker_engine)
    await asyncio.to_thread(handle.stop)


@pytest.mark.container
async def test_missing_image_raises_image_unavailable_with_build_hint(docker_engine: Any) -> None:
    """An image that is neither local nor pullable says how to build the offline one."""
    before = _container_ids(docker_engine)
    with pytest.raises(ImageUnavailableError) as info:
        await asyncio.to_thread(
            start_container, image="sixty/does-not-exist:never", network=HOST_NETWORK
        )
    message = str(info.value)
    assert "sixty/does-not-exist:never" in message
    assert "bash scripts/build-offline-postgres-image.sh" in message
    assert "SIXTY_PG_IMAGE=sixty/postgres:15-offline SIXTY_DOCKER_NETWORK=host" in message
    assert _container_ids(docker_engine) == before


@pytest.mark.container
async def test_container_that_exits_fails_fast_and_is_removed(
    docker_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its port already taken postgres exits; the error says so and nothing is left."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(_container, "free_loopback_port", lambda: taken)
        before = _container_ids(docker_engine)
        with pytest.raises(ProvisionError, match="stopped") as info:
            await asyncio.to_thread(
                start_container, image=IMAGE, network=HOST_NETWORK, password="pw-not-shown"
            )
    assert "pw-not-shown" not in str(info.value)
    assert _container_ids(docker_engine) == before


def test_dead_docker_socket_raises_docker_unavailable_naming_other_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DOCKER_HOST on a dead socket, the error names the embedded and url backends."""
    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))  # bound, never listening: connections are refused
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    assert docker_available() is False
    with pytest.raises(DockerUnavailableError) as info:
        start_container(image=IMAGE, network=HOST_NETWORK)
    message = str(info.value)
    assert "Docker is not reachable" in message
    assert "--db embedded" in message
    assert "--db url" in message
    assert "SIXTY_DATABASE_URL" in message


@dataclass
class FakeContainer:
    """A docker SDK container stand-in: scripted statuses and psql exit codes."""

    statuses: list[str]
    exit_codes: list[int]
    execs: int = 0
    status: str = "created"
    seen_env: list[dict[str, str]] = field(default_factory=list)

    def reload(self) -> None:
        self.status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def exec_run(self, cmd: list[str], *, environment: dict[str, str]) -> tuple[int, bytes]:
        self.execs += 1
        self.seen_env.append(environment)
        code = self.exit_codes.pop(0) if len(self.exit_codes) > 1 else self.exit_codes[0]
        return code, b"" if code == 0 else b"psql: error: connection refused"

    def logs(self, *, tail: int) -> bytes:
        return b"FATAL:  could not create any TCP/IP sockets\n"


def _wait(container: FakeContainer, clock: Any, timeout_s: float = 10.0) -> None:
    wait_until_ready(
        container,
        command=["psql"],
        environment={"PGPASSWORD": "secret"},
        timeout_s=timeout_s,
        poll_interval_s=1.0,
        clock=clock,
        sleep=clock.tick,
    )


def test_wait_returns_once_psql_succeeds(fake_clock: Any) -> None:
    """Readiness polls psql until it exits 0, passing the password in the environment."""
    container = FakeContainer(statuses=["running"], exit_codes=[2, 2, 0])
    _wait(container, fake_clock)
    assert container.execs == 3
    assert container.seen_env[0] == {"PGPASSWORD": "secret"}


def test_wait_gives_up_after_the_timeout_with_the_last_output(fake_clock: Any) -> None:
    """A container that never answers fails after timeout_s with psql's last words and logs."""
    container = FakeContainer(statuses=["running"], exit_codes=[2])
    with pytest.raises(ProvisionError, match="not ready within 10 s") as info:
        _wait(container, fake_clock, timeout_s=10.0)
    assert container.execs == 11  # at t = 0, 1, ..., 10
    assert "connection refused" in str(info.value)
    assert "could not create any TCP/IP sockets" in str(info.value)


def test_wait_stops_at_once_when_the_container_exits(fake_clock: Any) -> None:
    """An exited container fails the wait immediately, with its log tail, without exec."""
    container = FakeContainer(statuses=["exited"], exit_codes=[0])
    with pytest.raises(ProvisionError, match=r"stopped \(status exited\)") as info:
        _wait(container, fake_clock)
    assert container.execs == 0
    assert "could not create any TCP/IP sockets" in str(info.value)
