"""ONNX export (#18): ONNX Runtime gives what Classifier.predict_proba gives, to 1e-5, for the
trained model on MNIST test images and for user-built nets of every layer on random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scratchcnn import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    Softmax,
)
from scratchcnn.app import Classifier
from scratchcnn.data import load

from helpers import one_clear_line, run

REPO = Path(__file__).resolve().parents[1]
ort = pytest.importorskip(
    "onnxruntime", reason="ONNX Runtime not installed (pip install -e '.[test]')"
)
pytest.importorskip("onnx", reason="onnx not installed (pip install 'scratchcnn[onnx]')")


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def user_nets() -> dict[str, list]:
    """Nets of every layer the library has, with stride, padding, 1x1 and 5x5 kernels."""
    return {
        "pad5x5": [
            Conv2D(1, 16, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(16, 32, 3, padding=1),
            ReLU(), MaxPool2D(2), Conv2D(32, 64, 3), ReLU(), Flatten(), Dense(1600, 10),
        ],
        "stride-bn-1x1": [
            Conv2D(1, 8, 3, stride=2, padding=1), BatchNorm2D(8), ReLU(), Conv2D(8, 12, 1),
            ReLU(), MaxPool2D(3, stride=2), Flatten(), Dense(6 * 6 * 12, 32), BatchNorm1D(32),
            ReLU(), Dropout(0.3), Dense(32, 10),
        ],
        "rect-kernel-softmax": [
            Conv2D(1, 6, (3, 5), stride=(1, 2), padding=(1, 0)), ReLU(), MaxPool2D((2, 3)),
            Flatten(), Dense(14 * 4 * 6, 10), Softmax(),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("name", list(user_nets()))
def test_user_nets_match_onnx_runtime(name, tmp_path):
    clf = Classifier(Sequential(user_nets()[name], seed=1))
    rng = np.random.default_rng(0)
    for layer in clf.model.layers:  # batch norms with statistics other than 0 and 1
        if layer.buffers:
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, layer.num_features)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, layer.num_features)
    images = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    path = clf.export_onnx(tmp_path / f"{name}.onnx")
    got = session(path).run(None, {"images": images})[0]
    np.testing.assert_allclose(got, clf.predict_proba(images), rtol=0, atol=1e-5)


def test_a_trained_model_on_mnist_with_shifts_and_temperature(mnist_dir, tmp_path):
    images, labels = load("mnist", "test", mnist_dir)
    clf = Classifier.load(REPO / "docs" / "results" / "fast-mnist.npz")
    for tta, temperature in ((False, 1.0), (True, 1.7)):
        clf.tta, clf.temperature = tta, temperature
        path = clf.export_onnx(tmp_path / "fast.onnx")
        got = session(path).run(None, {"images": images[:2000]})[0]
        np.testing.assert_allclose(got, clf.predict_proba(images[:2000]), rtol=0, atol=1e-5)
        assert (got.argmax(axis=1) == labels[:2000]).mean() > 0.98


def test_the_command_line_exports(tmp_path):
    out = tmp_path / "model.onnx"
    result = run("export", str(REPO / "docs" / "results" / "fast-mnist.npz"), str(out))
    assert result.returncode == 0, result.stderr
    assert "uint8 images (N, 28, 28)" in result.stdout
    one_clear_line(run("export", str(tmp_path / "missing.npz"), str(out)), "no such model file")
    batch = np.zeros((3, 28, 28), np.uint8)
    assert session(out).run(None, {"images": batch})[0].shape == (3, 10)


def test_the_file_declares_the_oldest_ir_version_its_opset_allows(tmp_path):
    """A newer onnx package stamps its own newest IR version (14 with onnx 1.23), which the
    ONNX Runtime wheels for older Pythons refuse; opset 17 needs only IR 8."""
    import onnx

    path = Classifier(Sequential(user_nets()["pad5x5"], seed=1)).export_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.ir_version == 8
