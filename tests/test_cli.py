"""The ``sixty`` command as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_sixty(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sixty_core", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        check=False,
    )


def test_db_check_prints_each_step_and_succeeds() -> None:
    """`sixty db check` on the embedded backend times every step and exits 0."""
    result = run_sixty("db", "check", "--scale", "1")
    assert result.returncode == 0, result.stderr
    for step in ("provision", "migrate", "seed", "sanity query", "tear down", "rows/s"):
        assert step in result.stdout


def test_help_explains_the_commands() -> None:
    """--help lists the db actions."""
    result = run_sixty("db", "--help")
    assert result.returncode == 0
    for action in ("check", "up", "migrate", "seed"):
        assert action in result.stdout


def test_unknown_db_flag_is_a_usage_error() -> None:
    """An unknown --db value names the valid choices and exits 2."""
    result = run_sixty("db", "check", "--db", "sqlite")
    assert result.returncode == 2
    assert "embedded" in result.stderr and "container" in result.stderr


def test_unknown_db_env_is_refused() -> None:
    """An unknown SIXTY_DB names the valid backends and exits 1."""
    result = run_sixty("db", "check", env={"SIXTY_DB": "oracle"})
    assert result.returncode == 1
    assert "unknown database backend 'oracle'" in result.stderr


def test_negative_scale_is_refused() -> None:
    """A negative --scale exits 1 with a message and provisions nothing."""
    result = run_sixty("db", "check", "--scale", "-3")
    assert result.returncode == 1
    assert "seed scale must be >= 0" in result.stderr
    assert "provision" not in result.stdout


def test_bad_dsn_is_refused_without_echoing_the_password() -> None:
    """A DSN that cannot work is explained with its password redacted."""
    result = run_sixty("db", "migrate", "--dsn", "postgresql://me:topsecret@127.0.0.1:1/db")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


@pytest.mark.container
def test_unreachable_docker_names_the_other_backends() -> None:
    """--db container without a reachable Docker says so and names embedded and url."""
    result = run_sixty(
        "db",
        "check",
        "--db",
        "container",
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 1
    assert "Docker" in result.stderr
    assert "embedded" in result.stderr and "url" in result.stderr
