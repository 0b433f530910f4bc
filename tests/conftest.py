"""Shared fixtures: where the real MNIST files are, the PyTorch oracle when installed, and a
spy on the plain convolution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("SCRATCHCNN_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))
MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the four official MNIST files; skips (with the reason) when absent."""
    missing = [f for f in MNIST_FILES if not (MNIST_DIR / f).is_file()]
    if missing:
        pytest.skip(f"real MNIST files not found in {MNIST_DIR} (missing {', '.join(missing)})")
    return MNIST_DIR


@pytest.fixture(scope="session")
def torch():
    """PyTorch as a reference oracle (pip install torch==2.13.0); skips when absent."""
    return pytest.importorskip("torch", reason="PyTorch oracle not installed (torch==2.13.0)")


@pytest.fixture
def conv_forward_calls(monkeypatch) -> list[bool]:
    """Every call of the plain ``Conv2D.forward`` from now on, as its ``training`` flag: what a
    breakpoint in the file a learner reads would see."""
    from scratchcnn.nn import Conv2D

    calls: list[bool] = []
    original = Conv2D.forward

    def spy(self, x, training=True):
        calls.append(training)
        return original(self, x, training)

    monkeypatch.setattr(Conv2D, "forward", spy)
    return calls
