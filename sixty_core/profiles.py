"""Profiles: before and after as points in one flag space.

A :class:`Profile` is a frozen set of optimization flags. ``legacy`` has every flag off and
reproduces the original's anti-patterns; ``optimized`` has every flag on. Ablations switch
one flag at a time so a gain can be attributed to one change: ``optimized-no-static_cache``
is optimized without that flag, ``legacy+pool_tuning`` is legacy with it (several may be
chained: ``legacy+pool_tuning+session_cache``). Each flag selects a strategy object when the
app is built; handlers never branch on flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from sixty_core.errors import ConfigError

#: Every flag, in the order DESIGN.md section 3 lists them.
FLAGS: tuple[str, ...] = (
    "session_cache",
    "static_cache",
    "query_cache",
    "pool_tuning",
    "robust_create",
    "bounded_lists",
    "resource_tracking",
)

FLAG_DESCRIPTIONS: dict[str, str] = {
    "session_cache": "bearer token -> user cached 60 s; logout invalidates at once",
    "static_cache": "stages 1 h, owners and companies 15 min in an LRU+TTL cache",
    "query_cache": "SELECT result cache keyed by full SQL + params, invalidated by writes",
    "pool_tuning": "pool 15/3, command_timeout, bounded waiters with fast 503",
    "robust_create": "validated create, deadline + breaker, exactly-once fallback",
    "bounded_lists": "one joined, paginated list query (limit <= 500)",
    "resource_tracking": "timers, listeners and tasks released when their scope closes",
}


@dataclass(frozen=True)
class Profile:
    """A named set of enabled optimization flags."""

    name: str
    flags: frozenset[str]

    def __post_init__(self) -> None:
        unknown = self.flags - set(FLAGS)
        if unknown:
            raise ConfigError(f"unknown flag(s) {sorted(unknown)}; flags are {', '.join(FLAGS)}")

    def has(self, flag: str) -> bool:
        """True if ``flag`` is on; an unknown flag name raises ConfigError (typo guard)."""
        if flag not in FLAGS:
            raise ConfigError(f"unknown flag {flag!r}; flags are {', '.join(FLAGS)}")
        return flag in self.flags

    def as_dict(self) -> dict[str, bool]:
        """Every flag with its state, in FLAGS order (for results files and /api/health)."""
        return {flag: flag in self.flags for flag in FLAGS}


LEGACY = Profile("legacy", frozenset())
OPTIMIZED = Profile("optimized", frozenset(FLAGS))


def resolve_profile(name: str) -> Profile:
    """Return the profile called ``name``: a base, an ablation or a chain of additions.

    Accepted forms: ``legacy``, ``optimized``, ``optimized-no-FLAG`` (one flag off) and
    ``legacy+FLAG[+FLAG...]`` (flags on). Raises :class:`ConfigError` naming the forms.
    """
    cleaned = name.strip().lower()
    if cleaned == "legacy":
        return LEGACY
    if cleaned == "optimized":
        return OPTIMIZED
    if cleaned.startswith("optimized-no-"):
        flag = cleaned.removeprefix("optimized-no-")
        _check_flag(flag, name)
        return Profile(cleaned, OPTIMIZED.flags - {flag})
    if cleaned.startswith("legacy+"):
        added = cleaned.removeprefix("legacy+").split("+")
        for flag in added:
            _check_flag(flag, name)
        return Profile(cleaned, frozenset(added))
    raise ConfigError(
        f"unknown profile {name!r}: use legacy, optimized, optimized-no-FLAG or "
        f"legacy+FLAG[+FLAG...], with FLAG one of {', '.join(FLAGS)}"
    )


def parse_profile_list(text: str) -> tuple[str, ...]:
    """``"legacy, optimized"`` -> each named profile's canonical name, in order, without
    repeats (the ``--profiles`` option of several commands). ConfigError for an unknown
    profile, or for a list that names none."""
    names = tuple(
        dict.fromkeys(resolve_profile(part).name for part in text.split(",") if part.strip())
    )
    if not names:
        raise ConfigError("--profiles names no profile: e.g. --profiles legacy,optimized")
    return names


def _check_flag(flag: str, profile_name: str) -> None:
    if flag not in FLAGS:
        raise ConfigError(
            f"unknown flag {flag!r} in profile {profile_name!r}; flags are {', '.join(FLAGS)}"
        )
