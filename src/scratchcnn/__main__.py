"""``python -m scratchcnn`` is the ``scratchcnn`` command."""

import sys

from .cli import main

sys.exit(main())
