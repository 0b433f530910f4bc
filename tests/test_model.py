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
    ModelFileError,
    ReLU,
    Sequential,
    ShapeError,
    SoftmaxCrossEntropy,
    build,
)
from scratchcnn.augment import random_affine
from scratchcnn.classifier import Classifier
from scratchcnn.data import load
from scratchcnn.errors import DivergenceError
from scratchcnn.layers import ConvPool, Dropout, Flatten
from scratchcnn.schedules import Schedule


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
    model.forward(np.zeros((2, 28, 28, 1), np.float32))
    first = model.execution_order[0]  # the first conv runs fused with its max-pool
    assert isinstance(first, ConvPool) and first.conv is model.layers[0]
    assert first.backward(np.ones((2, 13, 13, 8), np.float32)) is None
    assert model.layers[0].grads["weight"].shape == (8, 1, 3, 3)
    alone = Conv2D(1, 2, 3)
    alone.forward(np.zeros((1, 5, 5, 1), np.float32))
    assert alone.backward(np.ones((1, 3, 3, 2), np.float32)).shape == (1, 5, 5, 1)


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
    with pytest.raises(ModelFileError, match="0.weight"):
        b.load_state_dict(state)
    with pytest.raises(ModelFileError, match="missing"):
        b.load_state_dict({})


def test_predict_proba_rows_sum_to_one_and_accepts_grey_batches():
    model = build("seed")
    x = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    p = model.predict_proba(x)
    assert p.shape == (5, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert model.predict(x).shape == (5,)


# -- the classic class -----------------------------------------------------------------------


def test_classic_class_is_a_facade_over_the_layers():
    net = HandwrittenNumberClassification(lr=0.1, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 6)
    fmap = net.generate_feature_map(images)
    assert fmap.shape == (6, 26, 26, 8)
    pooled = net.generate_max_pool(net.relu(fmap))
    assert pooled.shape == (6, 13, 13, 8)
    mask = net.binary_max_pool
    assert mask.shape == (6, 26, 26, 8) and set(np.unique(mask)) <= {0, 1}
    assert mask.reshape(6, 13, 2, 13, 2, 8).sum(axis=(2, 4)).max() == 1  # one winner a window
    flat = net.generate_flattened_array(pooled)
    probs = net.softmax(flat @ net.W_dense.T + net.B_dense)
    loss = net.compute_loss(probs, labels)
    assert loss == pytest.approx(-np.log(probs[np.arange(6), labels]).mean(), rel=1e-5)
    kernel_grad = net.generate_kernal_loss(net.unpool(net.backprop_decision_making(flat, labels)))

    # The same gradient through the plain model: one copy of the math.
    twin = build("seed", seed=0)
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(twin.forward(images[..., None] / np.float32(255)), labels)
    twin.backward(loss_fn.backward())
    np.testing.assert_allclose(kernel_grad, twin.layers[0].grads["weight"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs, net.model.predict_proba(images / np.float32(255)), rtol=1e-5)


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
    again = Classifier.create("seed", seed=1)
    state = again._load_checkpoint(ckpt)  # loads only finite weights: it would refuse others
    assert state["trainer"]["epoch"] == 1


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


def test_flatten_is_nhwc_row_major():
    x = np.arange(24).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(Flatten().forward(x)[0], np.arange(24))


def test_reused_buffers_never_clobber_a_pending_backward():
    # Layers keep their training temporaries between steps (kernels.Scratch). An inference
    # pass between a training forward and its backward, or a change of batch size, must not
    # change the gradients.
    rng = np.random.default_rng(0)
    x1, x2, x3 = rng.random((4, 28, 28, 1)), rng.random((7, 28, 28, 1)), rng.random((4, 28, 28, 1))
    upstream = rng.normal(size=(4, 10))

    def gradients(model):
        return [p.grad.copy() for p in model.parameters()]

    reference = build("keras", seed=1, dtype=np.float64)
    for layer in reference.layers:
        if isinstance(layer, Dropout):
            layer.p = 0.0
    reference.forward(x1)
    reference.backward(upstream)
    expected = gradients(reference)

    model = build("keras", seed=1, dtype=np.float64)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            layer.p = 0.0
    model.forward(x2)  # a step at another batch size first
    model.backward(rng.normal(size=(7, 10)))
    model.forward(x1)
    model.forward(x3, training=False)  # e.g. a validation pass before the backward
    model.backward(upstream)
    for got, want in zip(gradients(model), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_inference_pass_keeps_a_pending_dropout_mask():
    layer = Dropout(0.5, rng=np.random.default_rng(0))
    x = np.ones((3, 40))
    y = layer.forward(x)
    layer.forward(x, training=False)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), y)
