"""The API reference, generated from the docstrings with pdoc: it must build, without a
warning, for every public package. To write it: ``python -m pdoc scratchcnn scratchcnn.nn
scratchcnn.fast scratchcnn.training scratchcnn.data scratchcnn.app -o docs/api``."""

from __future__ import annotations

import warnings

import pytest

PACKAGES = ["nn", "fast", "training", "data", "app"]


def test_the_api_reference_builds(tmp_path):
    pdoc = pytest.importorskip("pdoc", reason="pdoc not installed (pip install .[test])")
    modules = ["scratchcnn", *(f"scratchcnn.{name}" for name in PACKAGES)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=tmp_path)
    ours = [w for w in caught if "scratchcnn" in str(w.message) or "scratchcnn" in w.filename]
    assert not ours, [str(w.message) for w in ours]
    for name in PACKAGES:
        assert (tmp_path / "scratchcnn" / f"{name}.html").is_file(), f"no page for {name}"
    nn = (tmp_path / "scratchcnn" / "nn.html").read_text()
    # the docstrings made it in: a layer's shapes, the loss's gradient
    assert "Conv2D" in nn and "(N, H, W, C)" in nn and "SoftmaxCrossEntropy" in nn
    app = (tmp_path / "scratchcnn" / "app.html").read_text()
    assert "Classifier" in app and "predict_proba" in app
