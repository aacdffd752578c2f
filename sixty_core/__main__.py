"""``python -m sixty_core`` runs the ``sixty`` command."""

import sys

from sixty_core.cli import main

sys.exit(main())
