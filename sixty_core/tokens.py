"""Bearer tokens: derivation from (seed, owner index) and the hash stored in ``sessions``.

Seeded tokens are derivable, so a load generator can authenticate as any seeded owner
without database access. Only :func:`hash_token` of a token is ever stored or used as a
cache key; the token itself never is.
"""

from __future__ import annotations

import hashlib
import hmac

TOKEN_PREFIX = "sixty_"


def derive_token(seed: int, owner_index: int) -> str:
    """Return the bearer token of seeded owner ``owner_index`` for seed ``seed``.

    Deterministic: the same pair always gives the same token; different pairs never
    collide in practice (HMAC-SHA256). Owner index 0 is the admin.
    """
    if owner_index < 0:
        raise ValueError(f"owner index must be >= 0, got {owner_index}")
    key = f"sixty-seed-{seed}".encode()
    digest = hmac.new(key, f"owner-{owner_index}".encode(), hashlib.sha256).hexdigest()
    return TOKEN_PREFIX + digest


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which ``token`` is stored and cached."""
    return hashlib.sha256(token.encode()).hexdigest()
