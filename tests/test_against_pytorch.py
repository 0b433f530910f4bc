"""Forward and backward of every layer, and whole training steps, against PyTorch autograd.

PyTorch works in NCHW, we work in NHWC: inputs are transposed on the way in and outputs on the
way out; weights share the same (out, in, KH, KW) layout and need no change.
"""

from __future__ import annotations

import numpy as np
import pytest

from scratchcnn import SGD, Adam, AdamW
from scratchcnn.fast import compile
from scratchcnn.nn import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    ReLU,
    Softmax,
    SoftmaxCrossEntropy,
)

from gradcheck import TORCH_TOL_32, TORCH_TOL_64, relative_error
from layer_cases import (
    CONV_CASES,
    CONV_NORM_POOL_CASES,
    CONV_POOL_CASES,
    DENSE_CASES,
    POOL_CASES,
    make_conv,
    make_conv_pool,
    make_dense,
    make_net,
    make_pool,
)

DTYPES = [(np.float64, TORCH_TOL_64), (np.float32, TORCH_TOL_32)]


def nchw(t, x: np.ndarray):
    return t.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)


def nhwc(tensor) -> np.ndarray:
    return tensor.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d(torch, case, dtype, tol):
    layer = make_conv(case, dtype)
    rng = np.random.default_rng(0)
    x = rng.normal(size=case[-1]).astype(dtype)
    y = layer.forward(x)
    upstream = rng.normal(size=y.shape).astype(dtype)
    grad_x = layer.backward(upstream)

    xt = nchw(torch, x)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=layer.stride, padding=layer.padding)
    yt.backward(torch.tensor(np.ascontiguousarray(upstream.transpose(0, 3, 1, 2))))

    assert y.dtype == dtype and grad_x.dtype == dtype
    assert relative_error(y, nhwc(yt)) < tol
    assert relative_error(grad_x, nhwc(xt.grad)) < tol
    assert relative_error(layer.grads["weight"], wt.grad.numpy()) < tol
    assert relative_error(layer.grads["bias"], bt.grad.numpy()) < tol


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_maxpool2d(torch, case, dtype, tol):
    layer = make_pool(case)
    rng = np.random.default_rng(1)
    x = rng.normal(size=case[-1]).astype(dtype)
    y = layer.forward(x)
    upstream = rng.normal(size=y.shape).astype(dtype)
    grad_x = layer.backward(upstream)

    xt = nchw(torch, x)
    yt = torch.nn.functional.max_pool2d(xt, layer.pool_size, layer.stride)
    yt.backward(torch.tensor(np.ascontiguousarray(upstream.transpose(0, 3, 1, 2))))
    assert relative_error(y, nhwc(yt)) < tol
    assert relative_error(grad_x, nhwc(xt.grad)) < tol


@pytest.mark.parametrize("pool,stride", [(2, None), (3, 2), (2, 1)])
def test_maxpool_ties_go_to_the_first_maximum_like_pytorch(torch, pool, stride):
    # Integers in {0, 1, 2} tie all the time; a constant image is one big tie.
    rng = np.random.default_rng(2)
    for x in (rng.integers(0, 3, size=(2, 7, 8, 3)).astype(np.float64), np.zeros((1, 6, 6, 2))):
        layer = make_pool(("ties", pool, stride, x.shape))
        y = layer.forward(x)
        upstream = np.ones_like(y)
        grad_x = layer.backward(upstream)
        xt = nchw(torch, x)
        yt = torch.nn.functional.max_pool2d(xt, pool, stride)
        yt.backward(torch.ones_like(yt))
        np.testing.assert_array_equal(grad_x, nhwc(xt.grad))
        # Every window hands its gradient to exactly one position: nothing is duplicated.
        assert grad_x.sum() == upstream.sum()


def conv_pool_against_torch(torch, layer, x: np.ndarray, upstream_seed: int = 0):
    """Run the fused layer and PyTorch's conv2d (+ relu) + max_pool2d; return both sets of
    results."""
    y = layer.forward(x)
    upstream = np.random.default_rng(upstream_seed).normal(size=y.shape).astype(x.dtype)
    grad_x = layer.backward(upstream)
    conv, pool = layer.conv, layer.pool
    xt = nchw(torch, x)
    wt = torch.tensor(conv.params["weight"], requires_grad=True)
    bt = torch.tensor(conv.params["bias"], requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=conv.stride, padding=conv.padding)
    if layer.relu is not None:
        yt = torch.relu(yt)
    yt = torch.nn.functional.max_pool2d(yt, pool.pool_size, pool.stride)
    yt.backward(torch.tensor(np.ascontiguousarray(upstream.transpose(0, 3, 1, 2))))
    ours = (y, grad_x, conv.grads["weight"], conv.grads["bias"])
    theirs = (nhwc(yt), nhwc(xt.grad), wt.grad.numpy(), bt.grad.numpy())
    return ours, theirs


@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CONV_POOL_CASES, ids=[c[0] for c in CONV_POOL_CASES])
def test_fused_conv_pool(torch, case, dtype, tol, relu):
    layer = make_conv_pool(case, dtype, relu=relu)
    x = np.random.default_rng(0).normal(size=case[-1]).astype(dtype)
    ours, theirs = conv_pool_against_torch(torch, layer, x)
    assert all(a.dtype == dtype for a in ours)
    names = ("output", "input grad", "weight grad", "bias grad")
    for name, a, b in zip(names, ours, theirs, strict=True):
        assert relative_error(a, b) < tol, name


@pytest.mark.parametrize("case", CONV_POOL_CASES[:3], ids=[c[0] for c in CONV_POOL_CASES[:3]])
def test_fused_conv_pool_ties_go_to_the_first_maximum(torch, case):
    # Integer images and weights make exact ties in the conv output; a constant image makes
    # every window one tie. The fused layer must pick the same winners as PyTorch.
    layer = make_conv_pool(case)
    rng = np.random.default_rng(1)
    layer.conv.params["weight"][...] = rng.integers(-1, 2, size=layer.conv.params["weight"].shape)
    images = (rng.integers(0, 2, size=case[-1]).astype(np.float64), np.ones(case[-1]))
    for x in images:
        ours, theirs = conv_pool_against_torch(torch, layer, x)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CONV_NORM_POOL_CASES, ids=[c[0] for c in CONV_NORM_POOL_CASES])
def test_fused_conv_norm_pool(torch, case, dtype, tol):
    layer = make_conv_pool(case, dtype, norm=True)
    conv, norm, pool = layer.conv, layer.norm.norm, layer.pool
    x = np.random.default_rng(4).normal(size=case[-1]).astype(dtype)
    y = layer.forward(x)
    upstream = np.random.default_rng(5).normal(size=y.shape).astype(dtype)
    grad_x = layer.backward(upstream)
    xt = nchw(torch, x)
    wt = torch.tensor(conv.params["weight"], requires_grad=True)
    bt = torch.tensor(conv.params["bias"], requires_grad=True)
    gt = torch.tensor(norm.params["weight"], requires_grad=True)
    betat = torch.tensor(norm.params["bias"], requires_grad=True)
    mean, var = torch.zeros(conv.out_channels, dtype=wt.dtype), torch.ones_like(gt)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=conv.stride, padding=conv.padding)
    yt = torch.nn.functional.batch_norm(yt, mean, var.detach(), gt, betat, training=True)
    yt = torch.nn.functional.max_pool2d(yt, pool.pool_size, pool.stride)
    yt.backward(torch.tensor(np.ascontiguousarray(upstream.transpose(0, 3, 1, 2))))
    pairs = {
        "output": (y, nhwc(yt)),
        "input grad": (grad_x, nhwc(xt.grad)),
        "conv weight grad": (conv.grads["weight"], wt.grad.numpy()),
        "conv bias grad": (conv.grads["bias"], bt.grad.numpy()),
        "norm weight grad": (norm.grads["weight"], gt.grad.numpy()),
        "norm bias grad": (norm.grads["bias"], betat.grad.numpy()),
        "running mean": (norm.buffers["running_mean"], mean.numpy()),
        "running var": (norm.buffers["running_var"], var.numpy()),
    }
    for name, (ours, theirs) in pairs.items():
        # the conv bias gradient is ~0 (batch norm removes the mean): compare absolutely
        if name == "conv bias grad":
            assert np.abs(ours - theirs).max() < tol * np.abs(upstream).sum(), name
        else:
            assert relative_error(ours, theirs) < tol, name


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", DENSE_CASES, ids=[c[0] for c in DENSE_CASES])
def test_dense(torch, case, dtype, tol):
    layer = make_dense(case, dtype)
    rng = np.random.default_rng(3)
    x = rng.normal(size=case[-1]).astype(dtype)
    y = layer.forward(x)
    upstream = rng.normal(size=y.shape).astype(dtype)
    grad_x = layer.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(layer.params["weight"], requires_grad=True)
    bt = torch.tensor(layer.params["bias"], requires_grad=True)
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(upstream))
    assert relative_error(y, yt.detach().numpy()) < tol
    assert relative_error(grad_x, xt.grad.numpy()) < tol
    assert relative_error(layer.grads["weight"], wt.grad.numpy()) < tol
    assert relative_error(layer.grads["bias"], bt.grad.numpy()) < tol


@pytest.mark.parametrize("layer,fn", [(ReLU, "relu"), (Softmax, "softmax")])
def test_activations(torch, layer, fn):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 10))
    upstream = rng.normal(size=(3, 10))
    ours = layer()
    y = ours.forward(x)
    grad_x = ours.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.relu(xt) if fn == "relu" else torch.softmax(xt, dim=1)
    yt.backward(torch.tensor(upstream))
    assert relative_error(y, yt.detach().numpy()) < TORCH_TOL_64
    assert relative_error(grad_x, xt.grad.numpy()) < TORCH_TOL_64


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy(torch, smoothing):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 10)) * 4
    labels = rng.integers(0, 10, size=6)
    loss = SoftmaxCrossEntropy(label_smoothing=smoothing)
    value = loss.forward(logits, labels)
    grad = loss.backward()
    lt = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(lt, torch.tensor(labels), label_smoothing=smoothing)
    ref.backward()
    assert abs(value - ref.item()) < 1e-12
    assert relative_error(grad, lt.grad.numpy()) < TORCH_TOL_64


def test_dropout_is_inverted_and_off_at_inference():
    layer = Dropout(0.5, rng=np.random.default_rng(6))
    x = np.ones((200, 50), dtype=np.float32)
    y = layer.forward(x, training=True)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs(y.mean() - 1.0) < 0.05  # expectation preserved
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


# -- whole networks: one optimizer step from the same weights -----------------------------------


def torch_twin(torch, model):
    """The same net in PyTorch, sharing our weights. NCHW convs, then back to NHWC before the
    flatten so that the dense weights line up with ours without any permutation."""
    nn = torch.nn
    modules = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            conv = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
            ).double()
            modules.append(conv)
        elif kind == "ReLU":
            modules.append(nn.ReLU())
        elif kind == "MaxPool2D":
            modules.append(nn.MaxPool2d(layer.pool_size, layer.stride))
        elif kind == "Flatten":
            modules += [Permute(torch), nn.Flatten()]
        elif kind == "Dropout":
            modules.append(nn.Identity())  # compared with dropout off (p = 0) below
        elif kind == "Dense":
            modules.append(nn.Linear(layer.in_features, layer.out_features).double())
        elif kind in ("BatchNorm2D", "BatchNorm1D"):
            norm = nn.BatchNorm2d if kind == "BatchNorm2D" else nn.BatchNorm1d
            modules.append(
                norm(layer.num_features, eps=layer.eps, momentum=layer.momentum).double()
            )
    net = nn.Sequential(*modules)
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
    params = [m for m in net if isinstance(m, kinds)]
    ours = [layer for layer in model.layers if layer.params]
    with torch.no_grad():
        for theirs, mine in zip(params, ours, strict=True):
            theirs.weight.copy_(torch.tensor(mine.params["weight"]))
            theirs.bias.copy_(torch.tensor(mine.params["bias"]))
    return net, params


def Permute(torch):  # noqa: N802 - reads like a module constructor
    class _Permute(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    return _Permute()


OPTIMIZERS = [
    (
        "sgd-momentum",
        lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda t, p: t.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    ),
    (
        "sgd-nesterov",
        lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
    (
        "adam",
        lambda p: Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda t, p: t.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    ),
    (
        "adamw",
        lambda p: AdamW(p, lr=1e-2, weight_decay=0.05),
        lambda t, p: t.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
    ),
]


ARCHS = ["seed", "keras", "fast", "best", "pad5x5"]


@pytest.mark.parametrize("engine", ["plain", "fast"])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_training_steps_match_pytorch(torch, arch, opt, engine):
    # The plain engine (every layer as its file reads) and its compiled twin, whole batches.
    training_steps_match_pytorch(
        torch, arch, opt, batch=5, workers=None if engine == "plain" else 1
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("opt", OPTIMIZERS[1:3], ids=[o[0] for o in OPTIMIZERS[1:3]])
def test_batches_split_over_threads_train_like_pytorch(torch, arch, opt):
    # The batch is cut in three parts, each run by its own copy of the ops in a thread; the
    # batch norms share their statistics across the parts (see fast/parallel.py).
    training_steps_match_pytorch(torch, arch, opt, batch=None, workers=3)


def training_steps_match_pytorch(torch, arch, opt, batch, workers):
    """Three steps on batches of ``batch`` (None: the smallest that splits in ``workers``),
    through the plain model (``workers`` None) or its compiled twin."""
    _, make_ours, make_theirs = opt
    model = make_net(arch)
    runner = model if workers is None else compile(model, workers)
    if batch is None:
        batch = next(n for n in range(1, 5000) if len(runner.parallel_parts(n)) == workers)
    if workers is not None:
        assert len(runner.parallel_parts(batch)) == workers
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.p = 0.0  # randomness cannot be shared with PyTorch
    net, tparams = torch_twin(torch, model)
    ours = make_ours(model.parameters())
    theirs = make_theirs(torch, [p for m in tparams for p in (m.weight, m.bias)])
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(7)
    for _ in range(3):  # several steps, so momentum and Adam's moments matter
        x = rng.random((batch, *model.input_shape))
        y = rng.integers(0, 10, size=batch)
        value = loss.forward(runner.forward(x), y)
        runner.backward(loss.backward())
        ours.step()
        theirs.zero_grad()
        ref = torch.nn.functional.cross_entropy(net(nchw(torch, x)), torch.tensor(y))
        ref.backward()
        theirs.step()
        assert abs(value - ref.item()) < 1e-9
    mine = [layer for layer in model.layers if layer.params]
    # A conv bias right before a batch norm has no effect: the norm removes the mean, so its
    # gradient is 0 up to rounding, and Adam turns that noise into steps of size lr in random
    # directions in both libraries. It is not compared here (test_fused_conv_norm_pool checks
    # its gradient is ~0 like PyTorch's); the loss at every step and all else must agree.
    no_effect = {
        id(layer)
        for layer, after in zip(model.layers[:-1], model.layers[1:], strict=True)
        if isinstance(layer, (Conv2D, Dense)) and isinstance(after, (BatchNorm1D, BatchNorm2D))
    }
    for theirs_mod, my_layer in zip(tparams, mine, strict=True):
        for name in ("weight", "bias"):
            if name == "bias" and id(my_layer) in no_effect:
                continue
            a, b = my_layer.params[name], getattr(theirs_mod, name).detach().numpy()
            err = relative_error(a, b)
            assert err < 1e-9, f"{arch} {my_layer!r}.{name}: relative error {err:.2e}"
    if opt[0].startswith("adam"):
        return  # the running means include those biases, which Adam set apart
    for layer in model.layers:  # batch-norm running statistics
        twin = tparams[mine.index(layer)] if layer.buffers else None
        for name, value in layer.buffers.items():
            err = relative_error(value, getattr(twin, name).detach().numpy())
            assert err < 1e-9, f"{arch} {layer!r}.{name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype,tol", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("kind,shape", [("2d", (3, 5, 4, 6)), ("2d", (1, 3, 3, 2)), ("1d", (7, 5))])
def test_batchnorm(torch, kind, shape, dtype, tol):
    channels = shape[-1]
    ours = (BatchNorm2D if kind == "2d" else BatchNorm1D)(channels, dtype=dtype)
    theirs = (torch.nn.BatchNorm2d if kind == "2d" else torch.nn.BatchNorm1d)(channels)
    theirs = theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    rng = np.random.default_rng(8)
    gamma, beta = rng.normal(1, 0.2, channels), rng.normal(0, 0.2, channels)
    ours.params["weight"][...], ours.params["bias"][...] = gamma, beta
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma)), theirs.bias.copy_(torch.tensor(beta))
    to_torch = (
        (lambda a: nchw(torch, a))
        if kind == "2d"
        else (lambda a: torch.tensor(a, requires_grad=True))
    )
    back = nhwc if kind == "2d" else (lambda t: t.detach().numpy())
    for step in range(2):  # two training steps move the running statistics
        x = (rng.normal(size=shape) * 3 + step).astype(dtype)
        upstream = rng.normal(size=shape).astype(dtype)
        y = ours.forward(x)
        grad_x = ours.backward(upstream)
        xt = to_torch(x)
        yt = theirs.train()(xt)
        theirs.zero_grad()
        yt.backward(to_torch(upstream).detach())
        assert relative_error(y, back(yt)) < tol
        assert relative_error(grad_x, back(xt.grad)) < tol
        assert relative_error(ours.grads["weight"], theirs.weight.grad.numpy()) < tol
        assert relative_error(ours.grads["bias"], theirs.bias.grad.numpy()) < tol
    assert relative_error(ours.buffers["running_mean"], theirs.running_mean.numpy()) < tol
    assert relative_error(ours.buffers["running_var"], theirs.running_var.numpy()) < tol
    x = rng.normal(size=shape).astype(dtype)
    with torch.no_grad():
        expected = back(theirs.eval()(to_torch(x)))
    assert relative_error(ours.forward(x, training=False), expected) < tol
