"""The HTTP API: a Starlette app factory over the deal service."""

from __future__ import annotations

from sixty_core.api.app import create_app

__all__ = ["create_app"]
