"""Export a classifier to ONNX, the format ONNX Runtime, phones, browsers and other languages run.

    scratchcnn export model.npz model.onnx          # or Classifier.export_onnx("model.onnx")

The graph is built with the ``onnx`` package's helper API from the model's own layer list, and
gives what ``Classifier.predict_proba`` gives for the same images:

    images   uint8 (N, 28, 28)                          the raw pixels
    -> x = pixel / (255 std) - mean / std               the normalisation (as data.to_batch)
    -> (N, 1, 28, 28)                                   ONNX convolutions are channels-first
    -> with test-time shifts: the batch and its four one-pixel shifts, (5N, 1, 28, 28)
    -> Conv, BatchNormalization (inference form), Relu, MaxPool, Gemm, Softmax, one per layer;
       Dropout is dropped; Flatten first transposes back to (N, H, W, C), the order the dense
       weights were trained in
    -> softmax(logits / temperature)                    (averaged over the shifts)
    -> probabilities float32 (N, classes)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ScratchCNNError
from ..fileio import atomic_write
from ..nn import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Softmax,
)

OPSET = 17
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (dy, dx), as Classifier.predict_proba


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ScratchCNNError(
            "exporting to ONNX needs the onnx package: pip install 'scratchcnn[onnx]'"
        ) from None
    return onnx


def build_graph(clf):
    """The ONNX ModelProto of ``clf`` (a :class:`~scratchcnn.app.Classifier`)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers = [], []
    counter = iter(range(1_000_000))

    def name(prefix: str) -> str:
        return f"{prefix}_{next(counter)}"

    def const(array, prefix: str = "c") -> str:
        label = name(prefix)
        initializers.append(numpy_helper.from_array(np.asarray(array), label))
        return label

    def node(op: str, inputs: list[str], **attrs) -> str:
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    model = clf.model
    f32 = np.float32
    x = node("Cast", ["images"], to=TensorProto.FLOAT)
    x = node("Mul", [x, const(f32(1.0 / (255.0 * clf.std)))])
    x = node("Sub", [x, const(f32(clf.mean / clf.std))])
    x = node("Unsqueeze", [x, const(np.array([1], np.int64))])  # (N, 1, 28, 28)
    if clf.tta:  # the batch and its shifted copies, what moves in being a blank pixel
        background = const(f32(-clf.mean / clf.std))
        pads = const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
        padded = node("Pad", [x, pads, background])  # (N, 1, 30, 30)
        copies = []
        for dy, dx in SHIFTS:  # output pixel (i, j) reads input (i - dy, j - dx)
            starts = const(np.array([1 - dy, 1 - dx], np.int64))
            ends = const(np.array([29 - dy, 29 - dx], np.int64))
            copies.append(node("Slice", [padded, starts, ends, const(np.array([2, 3], np.int64))]))
        x = node("Concat", copies, axis=0)  # (5N, 1, 28, 28)
    for layer in model.layers:
        x = _layer(layer, x, node, const)
    x = node("Div", [x, const(f32(clf.temperature))])
    x = node("Softmax", [x], axis=1)
    if clf.tta:
        classes = len(clf.classes)
        x = node("Reshape", [x, const(np.array([len(SHIFTS), -1, classes], np.int64))])
        x = node("ReduceMean", [x], axes=[0], keepdims=0)
    nodes.append(helper.make_node("Identity", [x], ["probabilities"]))
    graph = helper.make_graph(
        nodes,
        f"scratchcnn {clf.architecture}",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 28, 28])],
        [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, ["N", len(clf.classes)]
            )
        ],
        initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(graph, producer_name="scratchcnn", opset_imports=opsets)
    # make_model stamps the newest IR version the installed onnx knows, which older runtimes
    # refuse ("Unsupported model IR version"); the oldest IR that carries the opset loads
    # everywhere the opset does.
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    proto.doc_string = f"classes: {', '.join(clf.classes)}"
    onnx.checker.check_model(proto)
    return proto


def _layer(layer, x: str, node, const) -> str:
    """The ONNX nodes for one layer of the library, on NCHW tensors."""
    f32 = np.float32
    if isinstance(layer, Conv2D):
        (ph, pw), (sh, sw) = layer.padding, layer.stride
        return node(
            "Conv",
            [
                x,
                const(layer.params["weight"].astype(f32), "w"),
                const(layer.params["bias"].astype(f32), "b"),
            ],
            kernel_shape=list(layer.kernel_size),
            strides=[sh, sw],
            pads=[ph, pw, ph, pw],
        )
    if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
        p, b = layer.params, layer.buffers
        return node(
            "BatchNormalization",
            [
                x,
                const(p["weight"].astype(f32), "gamma"),
                const(p["bias"].astype(f32), "beta"),
                const(b["running_mean"].astype(f32), "mean"),
                const(b["running_var"].astype(f32), "var"),
            ],
            epsilon=layer.eps,
        )
    if isinstance(layer, ReLU):
        return node("Relu", [x])
    if isinstance(layer, MaxPool2D):
        return node("MaxPool", [x], kernel_shape=list(layer.pool_size), strides=list(layer.stride))
    if isinstance(layer, Flatten):  # our flatten order is (H, W, C)
        return node("Flatten", [node("Transpose", [x], perm=[0, 2, 3, 1])], axis=1)
    if isinstance(layer, Dense):
        weight = const(layer.params["weight"].astype(f32), "w")
        return node("Gemm", [x, weight, const(layer.params["bias"].astype(f32), "b")], transB=1)
    if isinstance(layer, Dropout):
        return x  # inference does nothing
    if isinstance(layer, Softmax):
        return node("Softmax", [x], axis=1)
    raise ScratchCNNError(f"no ONNX form for {layer!r}")


def export_onnx(clf, path: str | Path) -> Path:
    """Write ``clf`` as an ONNX file (atomically); returns the path."""
    data = build_graph(clf).SerializeToString()
    atomic_write(path, lambda out: out.write(data))
    return Path(path)
