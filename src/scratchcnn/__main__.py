"""``python -m scratchcnn`` is the ``scratchcnn`` command."""

import sys

from .app.cli import main

sys.exit(main())
