"""The ``sixty`` command as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sixty_core import cli
from sixty_core.cli import main
from sixty_core.harness.servers import Supervisor, free_port


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


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--edge-failure-rate", "2"], {}, "edge_failure_rate must be between 0 and 1, got 2.0"),
        (["--profile", "fast"], {}, "unknown profile"),
        ([], {"SIXTY_EDGE_LATENCY_MS": "soon"}, "SIXTY_EDGE_LATENCY_MS must be a number"),
        ([], {"SIXTY_MEMORY_CRITICAL_MB": "5"}, "memory_critical_mb (5.0) must be >="),
    ],
)
def test_serve_refuses_bad_settings_before_starting_anything(
    args: list[str], env: dict[str, str], message: str
) -> None:
    """A bad flag or SIXTY_* value is named, exits 1, and nothing is provisioned."""
    result = run_sixty("serve", *args, env=env)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert "provision" not in result.stdout


def test_serve_serves_the_api_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`sixty serve` prints its URLs, answers with a seeded token, and Ctrl-C (SIGINT)
    stops the service and the edge: exit 0, both ports closed."""
    tokens = tmp_path / "tokens.json"
    scratch = tmp_path / "tmp"  # the run's TMPDIR: whatever it leaves behind shows here
    scratch.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "sixty_core", "serve", "--profile", "legacy"]
    command += ["--port", str(port), "--tokens-file", str(tokens), "--time-scale", "0.001"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/health", timeout=2, trust_env=False).is_success:
                    break
            assert time.monotonic() < deadline, "sixty serve did not answer within 90 s"
            time.sleep(0.2)
        owner = next(o for o in json.loads(tokens.read_text())["owners"] if not o["is_admin"])
        deals = httpx.get(
            f"{base}/api/deals",
            headers={"Authorization": f"Bearer {owner['token']}"},
            timeout=10,
            trust_env=False,
        )
        assert deals.status_code == 200
        assert deals.json()["count"] == len(deals.json()["data"]) > 0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"service: {base}" in out and "edge:" in out and str(tokens) in out
    edge_url = re.search(r"edge:\s+(\S+)", out)
    assert edge_url is not None
    for url in (base, edge_url.group(1)):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/api/health", timeout=2, trust_env=False)
    assert "removed on exit" in out
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("sixty-")]


@pytest.mark.parametrize("keep_logs", [False, True])
def test_supervisor_removes_its_log_directory_unless_asked_to_keep_it(keep_logs: bool) -> None:
    """The temporary log directory a Supervisor made is gone after stop(), unless
    keep_logs; a directory the caller gave is never removed."""
    supervisor = Supervisor("postgresql://unused", "optimized", keep_logs=keep_logs)
    log = supervisor.log_path("service")
    log.write_text("started\n")
    supervisor.stop()
    assert log.exists() == keep_logs
    if keep_logs:
        shutil.rmtree(log.parent)


def test_supervisor_never_removes_a_log_directory_it_was_given(tmp_path: Path) -> None:
    supervisor = Supervisor("postgresql://unused", "optimized", log_dir=tmp_path)
    supervisor.log_path("service").write_text("started\n")
    supervisor.stop()
    assert (tmp_path / "service.log").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--quick"],
        ["load"],
        ["leaks"],
        ["reliability"],
        ["scale"],
        ["selftest"],
        ["calibrate"],
        ["bench"],
        ["ceiling"],
    ],
)
def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_work(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path through a file: the option, the path and the reason, exit 1, no traceback,
    and nothing started (no database step printed). In process: it fails before any work."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main([*command, "--out", str(a_file / "results")]) == 1
    printed = capsys.readouterr()
    assert f"--out {a_file / 'results'}: cannot create the folder" in printed.err
    assert "provision" not in printed.out


def test_an_output_folder_that_is_a_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    assert main(["bench", "--out", str(a_file)]) == 1
    assert f"--out {a_file} is a file: give a folder" in capsys.readouterr().err
    assert a_file.read_text() == "kept"


def test_a_refused_path_no_command_checked_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last net in ``main``: an OSError with a path, from any command, becomes
    ``sixty: error: PATH: reason``, not a traceback. (Every path a command takes is checked
    first today, so a command is made to raise one.)"""

    async def refused(*_: object) -> int:
        raise PermissionError(13, "Permission denied", "/srv/results")

    monkeypatch.setattr(cli, "_dispatch", refused)
    assert main(["db", "check"]) == 1
    assert capsys.readouterr().err.strip() == "sixty: error: /srv/results: Permission denied"


@pytest.mark.parametrize("command", [["db", "up", "--scale", "1"], ["serve"]])
@pytest.mark.parametrize("kind", ["through a file", "a folder"])
def test_a_tokens_file_that_cannot_be_written_is_refused_before_seeding(
    command: list[str], kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db up`` and ``serve`` write the tokens after seeding: a path that cannot take
    them is refused first, in one line naming the option (no database is started)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("kept")
    tokens = a_file / "sub" / "tokens.json" if kind == "through a file" else tmp_path
    assert main([*command, "--tokens-file", str(tokens)]) == 1
    err = capsys.readouterr().err
    assert "--tokens-file" in err
    assert ("cannot create the folder" if kind == "through a file" else "is a folder") in err
    assert a_file.read_text() == "kept"


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1", "http"])
def test_serve_refuses_a_port_no_server_can_listen_on(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", f"--port={port}"])
    assert exited.value.code == 2
    assert f"a TCP port is a whole number from 1 to 65535, got {port!r}" in capsys.readouterr().err
