"""Bearer-token authentication: ``Authorization: Bearer <token>`` -> :class:`User`.

``session_cache`` off (legacy): every request looks the session up and then the profile,
two database lookups, as the original did (getSession in the hook and again in apiCall;
ORIGINAL_SYSTEM.md §2.1 "Auth checks").
On (optimized): one joined lookup on a miss, cached up to 60 s under the full token hash
(never the token); unknown tokens are not cached; a logout revokes in the database and
drops the cache entry at once, so the app's own revocations take effect with 0 s delay.
Cached entries never outlive the session's own expiry.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sixty_core.cache import Cache
from sixty_core.db.recorder import count_auth_lookup
from sixty_core.db.repository import Repository
from sixty_core.errors import AuthError
from sixty_core.types import Row

MAX_TOKEN_LENGTH = 512

#: A wall clock returning aware datetimes (session expiry is wall-clock time).
WallClock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class User:
    """The authenticated caller."""

    id: uuid.UUID
    email: str
    full_name: str
    is_admin: bool
    expires_at: dt.datetime

    @property
    def visible_owner(self) -> uuid.UUID | None:
        """The owner filter for this user's reads: None for an admin (sees everyone)."""
        return None if self.is_admin else self.id


def parse_bearer(header: str | None) -> str:
    """Return the token of an ``Authorization: Bearer`` header; AuthError if unusable."""
    if not header:
        raise AuthError("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
        raise AuthError("malformed bearer token")
    return token


def _user(row: Row, expires_at: dt.datetime) -> User:
    name = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
    return User(
        id=row["id"],
        email=row["email"],
        full_name=name or row["email"],
        is_admin=bool(row["is_admin"]),
        expires_at=expires_at,
    )


class Authenticator(Protocol):
    """Turns a bearer token (given by its hash, :func:`~sixty_core.tokens.hash_token`: the
    caller hashes once per request) into a user, and revokes tokens."""

    async def authenticate(self, token_hash: str) -> User: ...

    async def logout(self, token_hash: str) -> bool:
        """Revoke the session stored under ``token_hash``; True if one was revoked."""
        ...


class DirectSessions:
    """Two database lookups per request: the session, then the profile."""

    def __init__(self, repository: Repository) -> None:
        self._repo = repository

    async def authenticate(self, token_hash: str) -> User:
        count_auth_lookup()
        session = await self._repo.find_session(token_hash)
        if session is None:
            raise AuthError("invalid, expired or revoked token")
        count_auth_lookup()
        profile = await self._repo.find_profile(session["user_id"])
        if profile is None:
            raise AuthError("invalid, expired or revoked token")
        return _user(profile, session["expires_at"])

    async def logout(self, token_hash: str) -> bool:
        return await self._repo.revoke_session(token_hash)


class _UnknownToken(Exception):
    """Raised inside the cache loader so an unknown token is never cached."""


class CachedSessions:
    """Token hash -> user in the ``sessions`` cache namespace (60 s), single-flight."""

    namespace = "sessions"

    def __init__(
        self, repository: Repository, cache: Cache, *, now: WallClock | None = None
    ) -> None:
        self._repo = repository
        self._cache = cache
        # A partial, not a lambda: called on every request, and it adds no Python frame.
        self._now = now or functools.partial(dt.datetime.now, dt.UTC)

    async def authenticate(self, token_hash: str) -> User:
        key = token_hash

        async def load() -> User:
            count_auth_lookup()
            row = await self._repo.find_session_user(key)
            if row is None:
                raise _UnknownToken
            return _user(row, row["expires_at"])

        try:
            user: User = await self._cache.get_or_load(self.namespace, key, load)
        except _UnknownToken:
            raise AuthError("invalid, expired or revoked token") from None
        if user.expires_at <= self._now():
            # The session expired while cached: drop it and fail closed.
            self._cache.invalidate(self.namespace, key)
            raise AuthError("invalid, expired or revoked token")
        return user

    async def logout(self, token_hash: str) -> bool:
        revoked = await self._repo.revoke_session(token_hash)
        self._cache.invalidate(self.namespace, token_hash)
        return revoked
