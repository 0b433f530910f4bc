"""The learner's notebooks in docs/notebooks, executed cell by cell (nbclient): a failing cell,
or an exercise's self-check, fails the test. They read MNIST from the tests' folder and train on
5,000 images, so that all of them take about a minute."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_five_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, mnist_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed: pip install .[test]")
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed: pip install .[test]")
    monkeypatch.setenv("SCRATCHCNN_DATA", str(mnist_dir))
    monkeypatch.setenv("SCRATCHCNN_NOTEBOOK_IMAGES", "5000")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in book.cells), "commit notebooks without outputs"
    started = time.perf_counter()
    client = nbclient.NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute(env=dict(os.environ))
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {time.perf_counter() - started:.1f} s")
