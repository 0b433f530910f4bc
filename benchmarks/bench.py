"""Run the scratchcnn vs PyTorch benchmark: ``python benchmarks/bench.py --help``.

The code lives in ``scratchcnn.app.bench`` so that ``scratchcnn bench`` runs the same thing.
"""

import sys

from scratchcnn.app.bench import main

if __name__ == "__main__":
    sys.exit(main())
