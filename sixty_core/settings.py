"""Settings: one frozen dataclass built from an injected mapping (``os.environ`` at the edge).

Nothing below the CLI reads ``os.environ``; the CLI builds :class:`Settings` once with
:meth:`Settings.from_env` and passes it down.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sixty_core.errors import ConfigError
from sixty_core.faults import parse_faults
from sixty_core.types import Environ

DB_BACKENDS = ("embedded", "container", "url")
DEFAULT_DB_BACKEND = "embedded"
DEFAULT_PG_IMAGE = "postgres:16"
DEFAULT_SEED_SCALE = 1
DEFAULT_SEED = 42
DEFAULT_TIME_SCALE = 1.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_EDGE_PORT = 8001
DEFAULT_EDGE_DEADLINE_S = 2.0
DEFAULT_MEMORY_WARNING_MB = 100.0
DEFAULT_MEMORY_CRITICAL_MB = 200.0
#: Period of the original's per-session "performance monitor" timer, in seconds.
DEFAULT_SESSION_MONITOR_PERIOD_S = 10.0
#: How often the service samples its RSS (trend, thresholds, emergency cleanup).
DEFAULT_MEMORY_SAMPLE_INTERVAL_S = 5.0
#: With resource_tracking, monitors of at most this many sessions live at once (LRU).
DEFAULT_MAX_MONITORED_SESSIONS = 1024
#: Open event streams one user may hold at once; the next is refused with 429.
DEFAULT_MAX_STREAMS_PER_USER = 10
#: How long a route waits for the whole request body before answering 408.
DEFAULT_BODY_READ_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob of sixty_core, with its default visible here.

    Environment variables (all optional): ``SIXTY_DB``, ``SIXTY_DATABASE_URL``,
    ``SIXTY_PG_IMAGE``, ``SIXTY_DOCKER_NETWORK``, ``SIXTY_EDGE_URL``, ``SIXTY_TEST_FAULTS``
    (comma-separated names from :mod:`sixty_core.faults`), and the numbers in
    :data:`NUMERIC_ENV` (``SIXTY_TIME_SCALE``, ``SIXTY_EDGE_FAILURE_RATE``, ...).

    The edge faults (``edge_failure_rate``, ``edge_hang_probability``, ``edge_latency_ms``)
    are what ``sixty serve`` injects into the edge upstream it starts.
    """

    db_backend: str = DEFAULT_DB_BACKEND
    database_url: str | None = None
    pg_image: str = DEFAULT_PG_IMAGE
    docker_network: str | None = None
    seed_scale: int = DEFAULT_SEED_SCALE
    seed: int = DEFAULT_SEED
    time_scale: float = DEFAULT_TIME_SCALE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    edge_port: int = DEFAULT_EDGE_PORT
    edge_url: str | None = None
    edge_deadline_s: float = DEFAULT_EDGE_DEADLINE_S
    edge_failure_rate: float = 0.0
    edge_hang_probability: float = 0.0
    edge_latency_ms: float = 0.0
    memory_warning_mb: float = DEFAULT_MEMORY_WARNING_MB
    memory_critical_mb: float = DEFAULT_MEMORY_CRITICAL_MB
    session_monitor_period_s: float = DEFAULT_SESSION_MONITOR_PERIOD_S
    memory_sample_interval_s: float = DEFAULT_MEMORY_SAMPLE_INTERVAL_S
    max_monitored_sessions: int = DEFAULT_MAX_MONITORED_SESSIONS
    max_streams_per_user: int = DEFAULT_MAX_STREAMS_PER_USER
    body_read_timeout_s: float = DEFAULT_BODY_READ_TIMEOUT_S
    application_name: str = "sixty"
    test_faults: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.db_backend not in DB_BACKENDS:
            raise ConfigError(
                f"unknown database backend {self.db_backend!r}: choose one of "
                + ", ".join(DB_BACKENDS)
            )
        if self.seed_scale < 0:
            raise ConfigError(f"seed scale must be >= 0, got {self.seed_scale}")
        if not self.time_scale >= 0:
            raise ConfigError(f"time scale must be >= 0, got {self.time_scale}")
        for name in ("edge_failure_rate", "edge_hang_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value}")
        for name in ("edge_latency_ms", "edge_deadline_s", "memory_warning_mb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if not self.memory_critical_mb >= self.memory_warning_mb:
            raise ConfigError(
                f"memory_critical_mb ({self.memory_critical_mb}) must be >= "
                f"memory_warning_mb ({self.memory_warning_mb})"
            )
        if not self.memory_sample_interval_s > 0:
            raise ConfigError(
                f"memory sample interval must be > 0 s, got {self.memory_sample_interval_s}"
            )
        if self.max_monitored_sessions < 1:
            raise ConfigError(
                f"max monitored sessions must be >= 1, got {self.max_monitored_sessions}"
            )
        if self.max_streams_per_user < 1:
            raise ConfigError(f"max streams per user must be >= 1, got {self.max_streams_per_user}")
        if not (math.isfinite(self.body_read_timeout_s) and self.body_read_timeout_s > 0):
            raise ConfigError(
                f"body read timeout must be a finite number > 0 s, got {self.body_read_timeout_s}"
            )
        object.__setattr__(self, "test_faults", parse_faults(self.test_faults))

    @classmethod
    def from_env(cls, environ: Environ, **overrides: object) -> Settings:
        """Build settings from an environment mapping; explicit ``overrides`` win.

        Overrides whose value is ``None`` are ignored, so CLI flags left unset fall back to
        the environment and then to the defaults. Raises :class:`ConfigError` on bad values.
        """
        values: dict[str, object] = {}
        if "SIXTY_DB" in environ:
            values["db_backend"] = environ["SIXTY_DB"].strip().lower()
        if environ.get("SIXTY_DATABASE_URL"):
            values["database_url"] = environ["SIXTY_DATABASE_URL"]
        if environ.get("SIXTY_PG_IMAGE"):
            values["pg_image"] = environ["SIXTY_PG_IMAGE"]
        if environ.get("SIXTY_DOCKER_NETWORK"):
            values["docker_network"] = environ["SIXTY_DOCKER_NETWORK"]
        if environ.get("SIXTY_EDGE_URL"):
            values["edge_url"] = environ["SIXTY_EDGE_URL"]
        if environ.get("SIXTY_TEST_FAULTS"):
            values["test_faults"] = parse_faults(environ["SIXTY_TEST_FAULTS"])
        for env_name, field_name in NUMERIC_ENV.items():
            if environ.get(env_name):
                values[field_name] = _parse_float(env_name, environ[env_name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)  # type: ignore[arg-type]


#: The server processes' event loop: ``auto`` (uvloop when installed), ``uvloop`` or
#: ``asyncio`` (read by :func:`sixty_core.api.server.server_loop_factory`, before any
#: Settings exist: the loop is chosen before the server's own code runs).
SERVER_LOOP_ENV = "SIXTY_SERVER_LOOP"

#: Numeric settings read from the environment: variable -> field.
NUMERIC_ENV = {
    "SIXTY_TIME_SCALE": "time_scale",
    "SIXTY_EDGE_DEADLINE_S": "edge_deadline_s",
    "SIXTY_EDGE_FAILURE_RATE": "edge_failure_rate",
    "SIXTY_EDGE_HANG_PROBABILITY": "edge_hang_probability",
    "SIXTY_EDGE_LATENCY_MS": "edge_latency_ms",
    "SIXTY_MEMORY_WARNING_MB": "memory_warning_mb",
    "SIXTY_MEMORY_CRITICAL_MB": "memory_critical_mb",
}


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
