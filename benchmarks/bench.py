"""Run the scratchcnn vs PyTorch benchmark: ``python benchmarks/bench.py --help``.

The code lives in ``scratchcnn.bench`` so that ``scratchcnn bench`` runs the same thing.
"""

import sys

from scratchcnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
