"""Every layer's backward pass against central differences in float64."""

from __future__ import annotations

import numpy as np
import pytest

from scratchcnn.nn import (
    BatchNorm1D,
    BatchNorm2D,
    Dropout,
    Flatten,
    ReLU,
    Softmax,
    SoftmaxCrossEntropy,
)
from scratchcnn.nn.im2col import col2im, im2col

from gradcheck import NUMERIC_TOL, numerical_gradient, relative_error, well_separated
from layer_cases import (
    CONV_CASES,
    CONV_NORM_POOL_CASES,
    CONV_POOL_CASES,
    DENSE_CASES,
    POOL_CASES,
    make_conv,
    make_conv_pool,
    make_dense,
    make_pool,
)


def check_layer(
    layer,
    x: np.ndarray,
    seed: int = 0,
    training_loss: bool = False,
    owners: list | None = None,
    near_zero: tuple[str, ...] = (),
) -> dict:
    """Compare dL/dx and every dL/dparam with numerical ones for L = sum(y * G).

    ``training_loss``: probe L in training mode (batch norm's output depends on the batch
    statistics there); otherwise inference mode, which is the same function for other layers.
    ``owners``: the layers whose parameters ``layer`` computes with (default: itself; a fused
    op of scratchcnn.fast names the plain layers it stands for). ``near_zero``: parameters
    whose true gradient is 0, judged against the input gradient's scale instead.
    """
    rng = np.random.default_rng(seed)
    y = layer.forward(x)
    upstream = rng.normal(size=y.shape)
    grad_x = layer.backward(upstream)

    def loss() -> float:
        return float((layer.forward(x, training=training_loss) * upstream).sum())

    errors = {"input": relative_error(grad_x, numerical_gradient(loss, x))}
    scale = np.abs(grad_x).max()
    for i, owner in enumerate(owners or [layer]):
        for name, value in owner.params.items():
            key = name if owners is None else f"{i}.{name}"
            numeric = numerical_gradient(loss, value)
            if key in near_zero:
                errors[key] = np.abs(owner.grads[name] - numeric).max() / scale
            else:
                errors[key] = relative_error(owner.grads[name], numeric)
    print(f"{layer!r} {x.shape}: " + ", ".join(f"d/d{k} {v:.1e}" for k, v in errors.items()))
    for name, err in errors.items():
        assert err < NUMERIC_TOL, f"{layer!r}: d/d{name} relative error {err:.2e}"
    return errors


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d(case):
    layer = make_conv(case)
    x = np.random.default_rng(2).normal(size=case[-1])
    errors = check_layer(layer, x)
    assert set(errors) == {"input", "weight", "bias"}


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_col2im_is_the_adjoint_of_im2col(case):
    # <im2col(x), S> = <x, col2im(S)> for every x and S: col2im sends each patch's gradient
    # back to the pixels the patch was read from, and nowhere else. S is laid out offset-major
    # for col2im: (KH, KW, N, OH, OW, C).
    layer = make_conv(case)
    rng = np.random.default_rng(5)
    x = rng.normal(size=case[-1])
    cols = im2col(x, layer.kernel_size, layer.stride, layer.padding)  # (N, OH, OW, KH, KW, C)
    s = rng.normal(size=cols.shape)
    back = col2im(s.transpose(3, 4, 0, 1, 2, 5), x.shape, layer.stride, layer.padding)
    assert back.shape == x.shape
    assert np.vdot(cols, s) == pytest.approx(np.vdot(x, back), rel=1e-12)


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_maxpool2d(case):
    check_layer(make_pool(case), well_separated(np.random.default_rng(3), case[-1]))


@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("case", CONV_POOL_CASES, ids=[c[0] for c in CONV_POOL_CASES])
def test_fused_conv_pool(case, relu):
    # The fused op of scratchcnn.fast (with the ReLU it takes in, or not). Random normal
    # inputs leave the conv outputs in a window, and the maxima from 0, far apart next to the
    # 1e-6 step.
    op = make_conv_pool(case, relu=relu)
    x = np.random.default_rng(13).normal(size=case[-1])
    errors = check_layer(op, x, owners=[op.conv])
    assert set(errors) == {"input", "0.weight", "0.bias"}


@pytest.mark.parametrize("case", CONV_NORM_POOL_CASES, ids=[c[0] for c in CONV_NORM_POOL_CASES])
@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
def test_fused_conv_norm_pool(case, relu):
    # conv + batch norm (+ ReLU) + max-pool fused, in training mode (the batch statistics are
    # part of the function). The conv bias has no effect through the norm: its gradient is 0.
    op = make_conv_pool(case, norm=True, relu=relu)
    x = np.random.default_rng(14).normal(size=case[-1])
    errors = check_layer(
        op, x, training_loss=True, owners=[op.conv, op.norm.norm], near_zero=("0.bias",)
    )
    assert set(errors) == {"input", "0.weight", "0.bias", "1.weight", "1.bias"}


@pytest.mark.parametrize("case", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense(case):
    check_layer(make_dense(case), np.random.default_rng(4).normal(size=case[-1]))


def test_relu():
    check_layer(ReLU(), well_separated(np.random.default_rng(5), (2, 3, 4, 2)))


def test_flatten():
    check_layer(Flatten(), np.random.default_rng(6).normal(size=(2, 3, 4, 2)))


def test_softmax():
    check_layer(Softmax(), np.random.default_rng(7).normal(size=(3, 5)))


def test_dropout_with_a_fixed_mask():
    # The mask is drawn in forward; a generator reset before each call keeps it fixed.
    layer = Dropout(0.3)
    x = np.random.default_rng(8).normal(size=(4, 6))
    layer.rng = np.random.default_rng(9)
    y = layer.forward(x)
    upstream = np.random.default_rng(10).normal(size=y.shape)
    grad = layer.backward(upstream)

    def loss() -> float:
        layer.rng = np.random.default_rng(9)
        return float((layer.forward(x) * upstream).sum())

    assert relative_error(grad, numerical_gradient(loss, x)) < NUMERIC_TOL
    kept = y != 0
    assert 0 < kept.sum() < y.size
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n", [1, 5])
def test_softmax_cross_entropy(smoothing, n):
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(n, 10)) * 3
    labels = rng.integers(0, 10, size=n)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    loss.forward(logits, labels)
    grad = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(logits, labels), logits)
    assert relative_error(grad, numeric) < NUMERIC_TOL
    if smoothing == 0.0:  # the textbook form (p - y) / N
        onehot = np.eye(10)[labels]
        loss.forward(logits, labels)  # the numerical probes left other probabilities behind
        np.testing.assert_allclose(grad, (loss.probs - onehot) / n, rtol=1e-12, atol=1e-15)


def test_loss_is_stable_for_huge_logits():
    loss = SoftmaxCrossEntropy()
    value = loss.forward(np.array([[1000.0, 0.0, -1000.0]]), np.array([1]))
    assert value == pytest.approx(1000.0)
    assert np.isfinite(loss.backward()).all()


@pytest.mark.parametrize(
    "layer,shape",
    [(BatchNorm2D(3), (2, 4, 5, 3)), (BatchNorm2D(2), (1, 3, 3, 2)), (BatchNorm1D(4), (5, 4))],
    ids=["2d", "2d-batch1", "1d"],
)
def test_batchnorm(layer, shape):
    layer.astype(np.float64)
    rng = np.random.default_rng(12)
    layer.params["weight"][...] = rng.normal(1, 0.3, size=layer.num_features)
    layer.params["bias"][...] = rng.normal(0, 0.3, size=layer.num_features)
    x = rng.normal(size=shape) * 2 + 1
    # forward() updates the running statistics; they do not affect the training output.
    check_layer(layer, x, training_loss=True)
