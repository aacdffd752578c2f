"""sixty_core: the deal service, legacy and optimized, and the harness that measures both."""

from __future__ import annotations

from pathlib import Path

from sixty_core.db.provision import Database, provision
from sixty_core.errors import SixtyError
from sixty_core.settings import Settings
from sixty_core.tokens import derive_token, hash_token

__all__ = [
    "Database",
    "Settings",
    "SixtyError",
    "derive_token",
    "hash_token",
    "provision",
]
__version__ = "0.1.0"

#: The folder holding this package's source: its checkout (``bench/``, ``pyproject.toml``,
#: the git state a result records) when installed editable, as ``make`` installs it.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
