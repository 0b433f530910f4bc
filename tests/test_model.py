"""The model level: seeding, shapes, errors, state, dtypes, the classic class, and learning."""

from __future__ import annotations

import numpy as np
import pytest

from scratchcnn import (
    Conv2D,
    Dense,
    HandwrittenNumberClassification,
    InputError,
    MaxPool2D,
    ReLU,
    Sequential,
    ShapeError,
    SoftmaxCrossEntropy,
    build,
)
from scratchcnn.app import Classifier, read_checkpoint
from scratchcnn.data import load, to_batch
from scratchcnn.errors import DivergenceError
from scratchcnn.nn import LAYER_TYPES, BatchNorm1D, BatchNorm2D, Dropout, Flatten, Softmax
from scratchcnn.training import Schedule, random_affine
from scratchcnn.training.augment import POLICIES, random_erasing


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = build("keras", seed=5), build("keras", seed=5), build("keras", seed=6)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(value, b.state_dict()[key])
    assert not np.array_equal(a.state_dict()["0.weight"], c.state_dict()["0.weight"])


def test_he_init_for_relu_layers_glorot_for_the_output():
    model = build("keras", seed=0)
    conv2 = model.layers[3].params["weight"]  # feeds a ReLU: std sqrt(2 / (32 * 9))
    assert conv2.std() == pytest.approx(np.sqrt(2 / 288), rel=0.05)
    dense = model.layers[-1].params["weight"]  # output layer: std sqrt(2 / (1600 + 10))
    assert dense.std() == pytest.approx(np.sqrt(2 / 1610), rel=0.05)


def test_summary_names_layers_shapes_and_counts():
    text = build("keras").summary()
    for expected in ["Conv2D(1, 32, 3)", "(26, 26, 32)", "320", "Conv2D(32, 64, 3)", "18,496",
                     "(5, 5, 64)", "Dropout(0.5)", "Dense(1600, 10)", "16,010",
                     "Total parameters: 34,826"]:  # fmt: skip
        assert expected in text


def test_float32_end_to_end_without_upcasts():
    model = build("keras", seed=0)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    logits = model.forward(x)
    assert logits.dtype == np.float32
    loss.forward(logits, np.array([1, 2, 3]))
    grad = loss.backward()
    assert grad.dtype == np.float32
    model.backward(grad)
    for p in model.parameters():
        assert p.value.dtype == np.float32 and p.grad.dtype == np.float32, p.name


def test_first_layer_skips_the_image_gradient():
    model = build("seed", seed=0)
    assert not model.layers[0].needs_input_grad and model.layers[-1].needs_input_grad
    x = np.zeros((2, 28, 28, 1), np.float32)
    assert model.layers[0].forward(x).shape == (2, 26, 26, 8)
    assert model.layers[0].backward(np.ones((2, 26, 26, 8), np.float32)) is None
    assert model.layers[0].grads["weight"].shape == (8, 1, 3, 3)
    alone = Conv2D(1, 2, 3)
    alone.forward(np.zeros((1, 5, 5, 1), np.float32))
    assert alone.backward(np.ones((1, 3, 3, 2), np.float32)).shape == (1, 5, 5, 1)


def test_backward_without_a_training_forward_is_one_clear_error():
    for layer in (Conv2D(1, 2, 3), MaxPool2D(2), ReLU(), Dense(4, 2), Flatten(), Softmax(),
                  BatchNorm2D(2), Dropout(0.5)):  # fmt: skip
        with pytest.raises(RuntimeError, match="without a training forward pass"):
            layer.backward(np.zeros((1, 2)))
    relu = ReLU()
    relu.forward(np.ones((2, 3)))
    relu.backward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="without a training forward pass"):
        relu.backward(np.ones((2, 3)))  # a cache is used once


@pytest.mark.parametrize(
    "x,message",
    [
        (np.zeros((28, 28, 1), np.float32), "batch of shape"),
        (np.zeros((2, 28, 28, 3), np.float32), "batch of shape"),
        (np.full((1, 28, 28, 1), np.nan, np.float32), "NaN"),
        (np.full((1, 28, 28, 1), np.inf, np.float32), "NaN or infinite"),
    ],
    ids=["rank", "channels", "nan", "inf"],
)
def test_model_input_errors(x, message):
    with pytest.raises((ShapeError, InputError), match=message):
        build("seed").forward(x)


def test_layer_errors_name_what_is_wrong():
    with pytest.raises(ShapeError, match="4-D input"):
        Conv2D(1, 2, 3).forward(np.zeros((5, 5, 1)))
    with pytest.raises(ShapeError, match="expects 3 input channel"):
        Conv2D(3, 2, 3).forward(np.zeros((1, 5, 5, 1)))
    with pytest.raises(ShapeError, match="kernel 7x7 is larger than the padded input 6x6"):
        Conv2D(1, 2, 7, padding=1).forward(np.zeros((1, 4, 4, 1)))
    with pytest.raises(ShapeError, match="pool window 3x3 is larger"):
        MaxPool2D(3).forward(np.zeros((1, 2, 2, 1)))
    with pytest.raises(ShapeError, match=r"per-sample shape \(10,\)"):
        Dense(10, 2).forward(np.zeros((4, 9)))
    with pytest.raises(ShapeError, match="layer 2"):  # caught when the model is built
        Sequential([Conv2D(1, 4, 3), ReLU(), Conv2D(4, 4, 30)], input_shape=(28, 28, 1))


def test_state_dict_round_trip_and_mismatch():
    a, b = build("seed", seed=1), build("seed", seed=2)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    state = a.state_dict()
    state["0.weight"] = state["0.weight"][:4]
    with pytest.raises(ValueError, match="0.weight"):
        b.load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({})
    good = a.state_dict()
    good["1.bias"] = good["0.bias"]  # layer 1 is a ReLU: no parameters
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_dict(good)
    complex_state = a.state_dict()
    complex_state["0.bias"] = complex_state["0.bias"] + 1j
    before = b.state_dict()
    with pytest.raises(ValueError, match="not real numbers"):
        b.load_state_dict(complex_state)
    for key, value in b.state_dict().items():  # nothing was changed
        np.testing.assert_array_equal(value, before[key])


def test_config_rebuilds_any_net_of_the_library_layers():
    model = Sequential(
        [Conv2D(3, 4, (3, 2), stride=(2, 1), padding=1), BatchNorm2D(4), ReLU(),
         MaxPool2D(2, stride=1), Flatten(), Dense(4 * 5 * 4, 6), BatchNorm1D(6), Dropout(0.3),
         Softmax()],
        input_shape=(9, 5, 3),
    )  # fmt: skip
    rebuilt = Sequential.from_config(model.config())
    assert rebuilt.config() == model.config()
    assert [repr(a) for a in rebuilt.layers] == [repr(b) for b in model.layers]
    assert set(LAYER_TYPES) == {type(layer).__name__ for layer in model.layers} | {"ReLU"}
    shape = [28, 28, 1]
    for layers, message in [
        ([{"type": "Lambda"}], "unknown layer type"),
        ([{"type": "ReLU", "code": 1}], "takes no argument"),
        ([{"type": "Dense", "in_features": 3}], "Dense"),
        ([{"type": "Dropout", "p": "0.5"}], "number"),
        ([{"type": "Dropout", "p": 1.5}], r"\[0, 1\)"),
        ([{"type": "Dense", "in_features": 2.5, "out_features": 3}], "integer"),
        ([{"type": "Conv2D", "in_channels": 1, "out_channels": 2, "kernel_size": 99}], "larger"),
        ([], "non-empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            Sequential.from_config({"input_shape": shape, "layers": layers})
    for bad, message in [({"input_shape": "28", "layers": []}, "input_shape"), ([], "JSON object")]:
        with pytest.raises(ValueError, match=message):
            Sequential.from_config(bad)


def test_predict_proba_rows_sum_to_one():
    model = build("seed")
    x = to_batch(np.random.default_rng(0).random((5, 28, 28), dtype=np.float32))
    p = model.predict_proba(x)
    assert p.shape == (5, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert model.predict(x).shape == (5,)
    assert model.predict_proba(x[:0]).shape == (0, 10)


def test_to_batch_is_the_one_way_images_become_a_batch():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    np.testing.assert_allclose(to_batch(images)[0, :, :, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(to_batch(images / 255.0), to_batch(images), rtol=1e-6)
    np.testing.assert_allclose(to_batch(images[..., None], 0.5, 0.5), to_batch(images) * 2 - 1)
    assert to_batch(images).dtype == np.float32 and to_batch(images).shape == (1, 2, 2, 1)
    with pytest.raises(ShapeError, match="grey images"):
        to_batch(np.zeros((2, 2)))


# -- the classic class -----------------------------------------------------------------------


def test_classic_class_follows_the_seed_and_matches_the_layers():
    net = HandwrittenNumberClassification(lr=0.1, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 6)
    fmap = net.generate_feature_map(images)
    assert fmap.shape == (6, 26, 26, 8)
    act = net.relu(fmap)
    pooled = net.generate_max_pool(act)
    assert pooled.shape == (6, 13, 13, 8)
    mask = net.binary_max_pool
    assert mask.shape == (6, 26, 26, 8) and set(np.unique(mask)) <= {0, 1}
    windows = mask.reshape(6, 13, 2, 13, 2, 8)
    assert (windows.sum(axis=(2, 4)) == 1).all()  # one winner a window
    np.testing.assert_array_equal((act * mask).reshape(6, 13, 2, 13, 2, 8).max(axis=(2, 4)), pooled)
    flat = net.generate_flattened_array(pooled)
    probs = net.softmax(flat @ net.W_dense.T + net.B_dense)
    loss = net.compute_loss(probs, labels)
    assert loss == pytest.approx(-np.log(probs[np.arange(6), labels]).mean(), rel=1e-5)
    grad_flat = net.backprop_decision_making(flat, labels)
    assert net.loss == pytest.approx(loss, rel=1e-6)

    # The dense gradients the class computes by hand are the Dense layer's own.
    net.dense.forward(flat)
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(net.dense.forward(flat), labels)
    layer_grad_flat = net.dense.backward(loss_fn.backward())
    np.testing.assert_allclose(net.dW_dense, net.dense.grads["weight"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(net.dB_dense, net.dense.grads["bias"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(grad_flat, layer_grad_flat, rtol=1e-5, atol=1e-8)

    # Unpooling through the mask is the max-pool layer's backward.
    grad_act = net.unpool(grad_flat)
    net.pool.forward(act)
    np.testing.assert_allclose(grad_act, net.pool.backward(grad_flat.reshape(pooled.shape)))
    assert (grad_act[mask == 0] == 0).all()

    kernel_grad = net.generate_kernal_loss(grad_act).copy()
    # The same gradient through the plain model, layer by layer.
    twin = build("seed", seed=0)
    loss_fn.forward(twin.forward(to_batch(images)), labels)
    twin.backward(loss_fn.backward())
    np.testing.assert_allclose(kernel_grad, twin.layers[0].grads["weight"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs, twin.predict_proba(to_batch(images)), rtol=1e-5)

    # sgd_step applies lr to every weight.
    before = [net.kernel.copy(), net.W_dense.copy(), net.B_dense.copy()]
    net.sgd_step()
    for after, old, grad in zip(
        (net.kernel, net.W_dense, net.B_dense),
        before,
        (kernel_grad, net.dW_dense, net.dB_dense),
        strict=True,
    ):
        np.testing.assert_allclose(after, old - 0.1 * grad, rtol=1e-5, atol=1e-7)


def test_classic_feature_map_with_an_explicit_kernel():
    net = HandwrittenNumberClassification()
    images = np.random.default_rng(1).random((2, 6, 7, 3))
    kernel = np.random.default_rng(2).random((4, 3, 3, 3))
    fmap = net.generate_feature_map(images, kernel)
    # Output pixel (1, 1) sees input rows 1..3 and columns 1..3.
    expected = np.einsum("nijc,fcij->nf", images[:, 1:4, 1:4, :], kernel)
    assert fmap.shape == (2, 4, 5, 4)
    np.testing.assert_allclose(fmap[:, 1, 1], expected, rtol=1e-10)


def test_classic_train_lowers_the_loss_and_predicts(mnist_dir):
    images, labels = load("mnist", "train", mnist_dir)
    net = HandwrittenNumberClassification(lr=0.05)
    losses = net.train(images[:6000], labels[:6000], epochs=3, batch_size=32)
    assert losses[2] < losses[1] < losses[0] < 2.3
    test_x, test_y = load("mnist", "test", mnist_dir)
    accuracy = (net.predict(test_x[:2000]) == test_y[:2000]).mean()
    assert accuracy > 0.85, accuracy


# -- learning on the real data -------------------------------------------------------------------


@pytest.mark.slow
def test_seed_net_one_epoch_on_all_of_mnist_reaches_97_percent(mnist_dir):
    train_x, train_y = load("mnist", "train", mnist_dir)
    test_x, test_y = load("mnist", "test", mnist_dir)
    clf = Classifier.create("seed", seed=0)
    clf.fit(train_x, train_y, epochs=1, batch_size=32, lr=0.01, optimizer="sgd", momentum=0.9)
    accuracy = clf.evaluate(test_x, test_y)["accuracy"]
    print(f"seed net, 1 epoch on 60,000 MNIST images: {100 * accuracy:.2f}% test accuracy")
    assert accuracy >= 0.97


def test_divergence_keeps_the_last_good_checkpoint(mnist_dir, tmp_path):
    images, labels = load("mnist", "test", mnist_dir)
    clf = Classifier.create("seed", seed=0)
    ckpt = tmp_path / "run.ckpt.npz"

    def explode(trainer, record):
        trainer.schedule = None
        trainer.optimizer.lr = 1e9

    with pytest.raises(DivergenceError, match="epoch 2"):
        clf.fit(images[:1000], labels[:1000], epochs=3, checkpoint=ckpt, on_epoch=explode)
    saved = read_checkpoint(ckpt)
    assert saved.trainer["epoch"] == 1
    Classifier.load(ckpt)  # loads only finite weights: it would refuse others


# -- schedules and augmentation ----------------------------------------------------------------


def test_schedules():
    cosine = Schedule("cosine", 0.1, total_steps=100)
    assert cosine(0) == pytest.approx(0.1) and cosine(50) == pytest.approx(0.05, rel=0.01)
    assert cosine(100) < 1e-3
    step = Schedule("step", 0.1, total_steps=100, steps_per_epoch=10, step_epochs=3)
    assert step(29) == pytest.approx(0.1) and step(30) == pytest.approx(0.01)
    onecycle = Schedule("onecycle", 0.2, total_steps=100, warmup=0.3)
    assert onecycle(0) == pytest.approx(0.2 / 25) and onecycle(30) == pytest.approx(0.2)
    assert onecycle(15) < onecycle(30) > onecycle(60)
    warm = Schedule("constant", 1.0, total_steps=10, warmup=0.5)
    assert warm(0) == pytest.approx(0.1) and warm(5) == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule("zigzag")


def test_augmentation_identity_and_shift():
    x = np.zeros((3, 28, 28, 1), np.float32)
    x[:, 10:15, 8:12] = 1.0
    same = random_affine(x, np.random.default_rng(0), 0, 0, 0)
    np.testing.assert_allclose(same, x, atol=1e-6)
    warped = random_affine(x, np.random.default_rng(0))
    assert warped.shape == x.shape and warped.dtype == np.float32
    assert not np.allclose(warped[0], warped[1])  # each image gets its own transform
    assert warped.min() >= 0 and warped.max() <= 1  # bilinear: no new extremes


def test_augmentation_warps_a_batch_in_chunks_as_it_would_whole(monkeypatch):
    from scratchcnn.training import augment

    x = np.random.default_rng(3).random((50, 28, 28, 1), np.float32)  # 3 chunks, the last short
    assert len(x) > augment.CHUNK_VALUES // x[0].size  # more than one chunk by default
    chunked = random_affine(x, np.random.default_rng(0), 3, 30, 0.3)
    monkeypatch.setattr(augment, "CHUNK_VALUES", x.size)  # the whole batch as one chunk
    whole = random_affine(x, np.random.default_rng(0), 3, 30, 0.3)
    np.testing.assert_array_equal(chunked, whole)
    assert not np.array_equal(chunked, x)


def test_mirror_flips_and_shifts_without_rotating_and_clothes_adds_erasing():
    x = np.zeros((64, 28, 28, 1), np.float32)
    x[:, 12:16, 2:12] = 1.0  # a flat bar on the left: mirrored, it lies on the right
    mirrored = POLICIES["mirror"](x, np.random.default_rng(0))
    left, right = mirrored[:, :, :14].sum(axis=(1, 2, 3)), mirrored[:, :, 14:].sum(axis=(1, 2, 3))
    assert 10 < (right > left).sum() < 54  # about half flipped
    np.testing.assert_allclose(mirrored.sum(axis=(1, 2, 3)), x.sum(axis=(1, 2, 3)), rtol=1e-5)
    rows = (mirrored.sum(axis=2)[..., 0] > 1.0).sum(axis=1)  # rows the bar covers
    assert rows.min() >= 4 and rows.max() <= 5  # still flat: 4 rows, 5 after a fractional shift
    erased = POLICIES["clothes"](x, np.random.default_rng(0))
    expected = random_erasing(POLICIES["mirror"](x, r := np.random.default_rng(0)), r)
    np.testing.assert_array_equal(erased, expected)


def test_flatten_is_nhwc_row_major():
    x = np.arange(24).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(Flatten().forward(x)[0], np.arange(24))


def test_an_inference_pass_keeps_a_pending_dropout_mask():
    layer = Dropout(0.5, rng=np.random.default_rng(0))
    x = np.ones((3, 40))
    y = layer.forward(x)
    layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)


def test_fit_with_fast_off_runs_the_plain_layers(conv_forward_calls):
    # A breakpoint in Conv2D.forward is hit by Classifier.fit(fast=False): the plain engine.
    calls = conv_forward_calls
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8), rng.integers(0, 10, 64)
    plain = Classifier.create("keras", seed=0)
    plain.fit(images, labels, epochs=1, batch_size=32, fast=False)
    assert calls.count(True) == 2 * 2  # two convs, two batches
    assert plain.training["engine"] == "plain"
    calls.clear()
    fast = Classifier.create("keras", seed=0)
    fast.fit(images, labels, epochs=1, batch_size=32)
    assert calls == [] and fast.training["engine"] == "fast"
    # the same training either way (dropout masks too), but for rounding
    for a, b in zip(plain.model.parameters(), fast.model.parameters(), strict=True):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-4, atol=1e-6)
