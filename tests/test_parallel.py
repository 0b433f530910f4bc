"""A batch split over worker threads (parallel.py) must give what the whole batch gives."""

import numpy as np
import pytest

from scratchcnn import SGD, SoftmaxCrossEntropy, build
from scratchcnn.errors import ShapeError
from scratchcnn.layers import BatchNorm2D
from scratchcnn.parallel import Presampled, Substream, dropout_streams, split


def test_split_covers_the_batch_in_near_equal_parts():
    for n in range(0, 70):
        for workers in (1, 2, 3, 4):
            for min_part in (1, 5, 16):
                parts = split(n, workers, min_part)
                assert parts[0].start == 0 and parts[-1].stop == n
                assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
                sizes = [p.stop - p.start for p in parts]
                assert len(parts) <= workers and max(sizes) - min(sizes) <= 1
                if len(parts) > 1:
                    assert min(sizes) >= min_part
    assert split(100, 2, 60) == [slice(0, 100)]  # too small for two parts: runs whole


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sample_shape", [(1600,), (5, 5, 64), (3, 5)])
@pytest.mark.parametrize("half_used", [False, True])
def test_dropout_streams_draw_what_the_whole_batch_draws(dtype, sample_shape, half_used):
    # Each part draws its own uniforms in its thread; together they must be exactly the whole
    # batch's, and the generator must go on as if it had drawn them itself.
    whole_rng, split_rng = np.random.default_rng(7), np.random.default_rng(7)
    if half_used:  # a float32 draw of odd length leaves half a 64-bit output pending
        whole_rng.random(3, dtype=np.float32), split_rng.random(3, dtype=np.float32)
    parts = split(101, 3)
    whole = whole_rng.random((101, *sample_shape), dtype=dtype)
    streams = dropout_streams(split_rng, sample_shape, parts, np.dtype(dtype))
    sizes = [(p.stop - p.start, *sample_shape) for p in parts]
    drawn = [stream.random(size, dtype) for stream, size in zip(streams, sizes, strict=True)]
    np.testing.assert_array_equal(np.concatenate(drawn), whole)
    for follow in (np.float32, np.float64, np.float32):
        np.testing.assert_array_equal(split_rng.random(7, follow), whole_rng.random(7, follow))
    # Parts draw side by side unless a half-used output is pending (jumping ahead would drop
    # it) or a float32 part would start inside an output.
    odd_start = half_used or (dtype == np.float32 and np.prod(sample_shape) % 2 == 1)
    assert all(isinstance(s, Presampled if odd_start else Substream) for s in streams)
    with pytest.raises(RuntimeError, match="dropout uniforms"):
        streams[0].random((1, *sample_shape), dtype)


def smallest_split_batch(arch, parts):
    model = build(arch)
    model.workers = parts
    return next(n for n in range(1, 2000) if len(model.parallel_parts(n)) == parts)


def train(arch, workers, steps=3, batch=None, dtype=np.float64):
    """Parameters, buffers, last gradients and logits after ``steps`` SGD steps."""
    model = build(arch, seed=5, dtype=dtype)
    model.workers = workers
    batch = batch or smallest_split_batch(arch, 3)
    rng = np.random.default_rng(11)
    loss, optimizer = SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        x = rng.random((batch, 28, 28, 1), dtype=dtype)
        loss.forward(model.forward(x), rng.integers(0, 10, batch))
        model.backward(loss.backward())
        optimizer.step()
    grads = {p.name: p.grad.copy() for p in model.parameters()}
    return model.state_dict(), grads, model.forward(x, training=False), model


@pytest.mark.parametrize("arch", ["keras", "fast", "best"])
def test_split_steps_equal_whole_steps(arch):
    # keras has dropout (the parts must get the masks the whole batch would), fast and best
    # have batch norms (their statistics must be the whole batch's, running ones included).
    state1, grads1, logits1, whole = train(arch, workers=1)
    state3, grads3, logits3, split3 = train(arch, workers=3)
    batch = smallest_split_batch(arch, 3)
    assert len(whole.parallel_parts(batch)) == 1 and len(split3.parallel_parts(batch)) == 3
    for name in state1:
        np.testing.assert_allclose(state3[name], state1[name], rtol=1e-9, atol=1e-12)
    for name in grads1:
        np.testing.assert_allclose(grads3[name], grads1[name], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(logits3, logits1, rtol=1e-9, atol=1e-10)


def test_split_steps_in_float32_stay_close():
    state1, grads1, _, _ = train("keras", workers=1, steps=1, dtype=np.float32)
    state2, grads2, _, _ = train("keras", workers=2, steps=1, dtype=np.float32)
    for name in grads1:
        assert grads2[name].dtype == np.float32
        scale = np.abs(grads1[name]).max()
        np.testing.assert_allclose(grads2[name], grads1[name], atol=1e-5 * scale)


def test_split_inference_equals_whole_inference():
    x = np.random.default_rng(0).random((300, 28, 28, 1), dtype=np.float32)
    whole, split2 = build("fast", seed=2), build("fast", seed=2)
    whole.workers, split2.workers = 1, 2
    assert len(split2.parallel_parts(len(x))) == 2
    np.testing.assert_allclose(split2.predict_proba(x), whole.predict_proba(x), atol=1e-6)


def test_pending_split_step_survives_validation_and_a_whole_step_replaces_it():
    model = build("keras", seed=1, dtype=np.float64)
    model.workers = 2
    reference = build("keras", seed=1, dtype=np.float64)
    reference.workers = 1
    rng = np.random.default_rng(3)
    big, small = rng.random((64, 28, 28, 1)), rng.random((4, 28, 28, 1))
    upstream = rng.normal(size=(64, 10)) / 64
    assert len(model.parallel_parts(64)) == 2 and len(model.parallel_parts(4)) == 1
    for net in (model, reference):
        net.forward(big)
        net.forward(big[:40], training=False)  # a validation pass (itself split) in between
        net.backward(upstream)
    for mine, ref in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_allclose(mine.grad, ref.grad, rtol=1e-9, atol=1e-14)
    model.forward(big)
    model.forward(small)  # a new training forward: its backward is the one that runs
    model.backward(np.ones((4, 10)))
    assert model.parameters()[0].grad.shape == reference.parameters()[0].grad.shape


def test_astype_after_a_split_step_rebuilds_the_copies():
    model = build("keras", seed=4)
    model.workers = 2
    x = np.random.default_rng(0).random((64, 28, 28, 1))
    model.forward(x, training=False)
    model.astype(np.float64)
    reference = build("keras", seed=4)
    reference.astype(np.float64)
    reference.workers = 1
    logits = model.forward(x, training=False)
    assert logits.dtype == np.float64
    np.testing.assert_allclose(logits, reference.forward(x, training=False), rtol=1e-12)


@pytest.mark.timeout(60)
def test_an_error_in_one_part_surfaces_without_a_deadlock(monkeypatch):
    # The other part waits for the failed one's batch-norm sums: it must be released, and the
    # error of the part that failed is the one raised.
    model = build("fast", seed=0)
    model.workers = 2
    x = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    model.forward(x)  # builds the copies
    replica_norm = model._replicas._replicas[1][0][1]
    assert isinstance(replica_norm, BatchNorm2D)

    def broken(*args, **kwargs):
        raise FloatingPointError("part 1 failed")

    monkeypatch.setattr(replica_norm, "forward", broken)
    with pytest.raises(FloatingPointError, match="part 1 failed"):
        model.forward(x)
    monkeypatch.undo()
    y = np.zeros(64, dtype=int)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)  # the model still trains afterwards
    model.backward(loss.backward())
    assert all(np.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("arch", ["keras", "fast"])
def test_train_step_equals_forward_loss_backward(arch, workers):
    # train_step sends a split batch to the threads once (forward, loss and backward in each);
    # label smoothing checks that each part's loss is weighted by its share of the batch.
    rng = np.random.default_rng(8)
    batch = 3 * smallest_split_batch(arch, 2) // 2 + 1  # parts of unequal sizes when split
    x, y = rng.random((batch, 28, 28, 1)), rng.integers(0, 10, batch)
    fused, separate = build(arch, seed=6, dtype=np.float64), build(arch, seed=6, dtype=np.float64)
    fused.workers = separate.workers = workers
    assert len(fused.parallel_parts(batch)) == workers
    value, logits = fused.train_step(x, y, SoftmaxCrossEntropy(label_smoothing=0.1))
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    expected_logits = separate.forward(x)
    expected = loss.forward(expected_logits, y)
    separate.backward(loss.backward())
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-12, atol=1e-13)
    for mine, ref in zip(fused.parameters(), separate.parameters(), strict=True):
        np.testing.assert_allclose(mine.grad, ref.grad, rtol=1e-9, atol=1e-13)


def test_train_step_checks_the_labels():
    model = build("keras")
    x = np.zeros((100, 28, 28, 1), dtype=np.float32)
    with pytest.raises(ShapeError, match="expected 100 labels"):
        model.train_step(x, np.zeros(99, dtype=int), SoftmaxCrossEntropy())
