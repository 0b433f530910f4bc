"""Batches split over child processes (scratchcnn/fast/processes.py): logits, losses and
gradients equal the worker threads' bit for bit and the plain engine's to rounding; the
children see every update of the parameters; a child that dies costs nothing but a warning;
children stop with the model.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

from scratchcnn import SGD, SoftmaxCrossEntropy
from scratchcnn.fast import compile, compiled, parallel, processes

from gradcheck import relative_error
from layer_cases import NETS, make_net, no_effect_params

pytestmark = pytest.mark.skipif(not processes.SUPPORTED, reason="child processes need POSIX")
EXACT = 1e-9


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    """Parts of a few samples go to the children and the threads alike (the library waits for
    millions of values), so that the tests' batches stay small."""
    monkeypatch.setattr(processes, "MIN_PART_VALUES", 1)
    monkeypatch.setattr(processes, "MIN_TRAIN_PART_VALUES", 1)
    monkeypatch.setattr(processes, "MIN_TRAIN_PART_VALUES_NORM", 1)
    monkeypatch.setattr(compiled, "MIN_PART_VALUES", 1)


def batch(model, n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *model.input_shape))


def children(fast) -> list:
    split = fast._processes.split
    return [] if split is None else split.children


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def kill_the_child(fast) -> None:
    (child,) = children(fast)
    os.kill(child.process.pid, signal.SIGKILL)
    child.process.wait()


def assert_same_step(step, model, plain_step, plain) -> None:
    """Loss, logits, gradients and running statistics of a step equal the plain engine's to
    rounding (a bias right before a batch norm, whose gradient is rounding noise, to 1e-12)."""
    (loss, logits), (p_loss, p_logits) = step, plain_step
    assert abs(loss - p_loss) <= EXACT * p_loss
    assert relative_error(logits, p_logits) < EXACT
    quiet = no_effect_params(plain)
    for i, (layer, p_layer) in enumerate(zip(model.layers, plain.layers, strict=True)):
        for key in layer.params:
            if f"{i}.{key}" in quiet:
                assert np.abs(layer.grads[key] - p_layer.grads[key]).max() < 1e-12
            else:
                assert relative_error(layer.grads[key], p_layer.grads[key]) < EXACT
        for key in layer.buffers:
            assert relative_error(layer.buffers[key], p_layer.buffers[key]) < EXACT


@pytest.mark.parametrize("name", NETS)
def test_the_split_gives_the_threads_logits_bit_for_bit(name):
    plain, twin = make_net(name), make_net(name)
    fast, threads = compile(twin, workers=3), compile(twin, workers=3, processes=False)
    x = batch(plain, 11)
    assert fast.start_processes(11)
    assert [(p.start, p.stop) for p in fast.process_parts(11)] == [(0, 3), (3, 7), (7, 11)]
    assert threads.parallel_parts(11, training=False) == fast.process_parts(11)
    logits = fast.forward(x, training=False)
    assert len(children(fast)) == 2 and fast._processes.split.broken is None  # they ran it
    np.testing.assert_array_equal(logits, threads.forward(x, training=False))
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT
    np.testing.assert_array_equal(fast.predict_proba(x), threads.predict_proba(x))
    fast.close()


def runs(fast) -> int:
    """How many batches the children have taken part in."""
    return fast._processes.split.runs


def train_twice(runner, model, optimizer, batches):
    out = []
    for x, y in batches:
        out.append(runner.train_step(x, y, SoftmaxCrossEntropy(label_smoothing=0.1)))
        optimizer.step()
    return out


@pytest.mark.parametrize("name", NETS)
def test_a_split_training_step_is_the_threads_step_bit_for_bit(name):
    """Every net (with dropout: ``keras``; with batch norm, whose sums cross the processes:
    ``fast``, ``best``, ...): losses, logits, gradients, running statistics and the
    parameters after SGD steps with momentum equal the threads' exactly and the plain engine's to
    rounding (a bias right before a batch norm, whose gradient is rounding noise, to 1e-12)."""
    plain, twin, other = make_net(name), make_net(name), make_net(name)
    quiet = no_effect_params(plain)
    fast = compile(twin, workers=3)
    threads = compile(other, workers=3, processes=False)
    assert fast.start_processes(11)
    assert fast.process_parts(11, training=True) == threads.parallel_parts(11)
    assert len(fast.process_parts(11, training=True)) == 3
    rng = np.random.default_rng(1)
    batches = [(batch(plain, 11, seed), rng.integers(0, 10, 11)) for seed in range(3)]
    results = {}
    for key, runner, model in (
        ("plain", plain, plain),
        ("fast", fast, twin),
        ("threads", threads, other),
    ):
        optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
        results[key] = train_twice(runner, model, optimizer, batches)
    assert runs(fast) == 3 and fast._processes.split.broken is None
    for (loss, logits), (t_loss, t_logits), (p_loss, p_logits) in zip(
        results["fast"], results["threads"], results["plain"], strict=True
    ):
        assert loss == t_loss
        np.testing.assert_array_equal(logits, t_logits)
        assert abs(loss - p_loss) <= EXACT * p_loss
        assert relative_error(logits, p_logits) < EXACT
    for i, (layer, t_layer, p_layer) in enumerate(
        zip(twin.layers, other.layers, plain.layers, strict=True)
    ):
        for key in layer.params:
            np.testing.assert_array_equal(layer.grads[key], t_layer.grads[key])
            np.testing.assert_array_equal(layer.params[key], t_layer.params[key])
            if f"{i}.{key}" in quiet:
                assert np.abs(layer.params[key] - p_layer.params[key]).max() < 1e-12
            else:
                assert relative_error(layer.params[key], p_layer.params[key]) < EXACT
        for key in layer.buffers:  # running statistics, moved by part 0 alone
            np.testing.assert_array_equal(layer.buffers[key], t_layer.buffers[key])
            assert relative_error(layer.buffers[key], p_layer.buffers[key]) < EXACT
    fast.close()


@pytest.mark.parametrize("name", ["keras", "pad5x5", "fast"])
def test_split_parts_in_chunks_follow_the_plain_engine(name, monkeypatch):
    """Every part in chunks of at most two samples, this process's and the children's (told
    the size with their part): losses and logits of three SGD steps with momentum, dropout on,
    and the last step's gradients and running statistics equal the plain engine's to
    rounding; a net with batch norm runs its parts whole."""
    plain, twin = make_net(name), make_net(name)
    monkeypatch.setattr(parallel, "CHUNK_VALUES", 2 * parallel.values_per_sample(plain))
    monkeypatch.setattr(parallel, "CHUNKS", True)
    sizes: list[int] = []  # of the chunks run in this process
    step = parallel._step
    monkeypatch.setattr(parallel, "_step", lambda *args: sizes.append(len(args[1])) or step(*args))
    sent: list = []  # what the children were handed
    send = processes.Child._send
    monkeypatch.setattr(processes.Child, "_send", lambda self, m: sent.append(m) or send(self, m))
    fast = compile(twin, workers=3)
    assert fast.start_processes(11)
    rng = np.random.default_rng(1)
    batches = [(batch(plain, 11, seed), rng.integers(0, 10, 11)) for seed in range(3)]
    results = [
        train_twice(runner, model, SGD(model.parameters(), lr=0.05, momentum=0.9), batches)
        for runner, model in ((plain, plain), (fast, twin))
    ]
    assert runs(fast) == 3 and fast._processes.split.broken is None
    fast.close()
    (*plain_before, plain_last), (*before, last) = results
    for (p_loss, p_logits), (loss, logits) in zip(plain_before, before, strict=True):
        # the steps before: the parameters each moved show in the next step's loss and logits
        assert abs(loss - p_loss) <= EXACT * p_loss
        assert relative_error(logits, p_logits) < EXACT
    assert_same_step(last, twin, plain_last, plain)
    chunk = parallel.chunk_samples(plain)
    assert [m[-1] for m in sent if m[0] == "train"] == [chunk] * 6  # two children, three steps
    # parts of 3, 4 and 4: this process runs part 0
    assert sizes == ([3] if chunk is None else [1, 2]) * 3


def test_a_child_that_dies_in_a_step_with_batch_norm_has_the_step_run_on_the_threads():
    """Part 0 needs the child's sums mid-pass: the step is undone (running statistics,
    dropout generators) and run again on the threads, so it counts once."""
    plain, twin = make_net("best"), make_net("best")
    fast = compile(twin, workers=2)
    x, y = batch(plain, 8), np.arange(8) % 10
    assert fast.start_processes(8)
    fast.train_step(x, y, SoftmaxCrossEntropy())  # one step on the processes
    plain.train_step(x, y, SoftmaxCrossEntropy())
    assert runs(fast) == 1
    kill_the_child(fast)
    with pytest.warns(RuntimeWarning, match="back to threads: the child process"):
        step = fast.train_step(x, y, SoftmaxCrossEntropy())
    assert fast._processes.split is None or fast._processes.split.broken
    assert_same_step(step, twin, plain.train_step(x, y, SoftmaxCrossEntropy()), plain)


def test_a_child_that_dies_mid_training_costs_a_warning_and_nothing_else():
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    x, y = batch(plain, 6), np.arange(6) % 10
    assert fast.start_processes(6)
    kill_the_child(fast)
    with pytest.warns(RuntimeWarning, match="back to threads: the child process exited"):
        step = fast.train_step(x, y, SoftmaxCrossEntropy())
    assert_same_step(step, twin, plain.train_step(x, y, SoftmaxCrossEntropy()), plain)


def test_the_children_see_every_update_of_the_parameters_and_statistics():
    plain, twin = make_net("best"), make_net("best")  # batch norm: running statistics too
    fast = compile(twin, workers=2)
    x = batch(plain, 12)
    assert fast.start_processes(12)
    fast.forward(x, training=False)
    for model, runner in ((plain, plain), (twin, fast)):
        optimizer = SGD(model.parameters(), lr=0.1)
        for step in range(2):
            xb = batch(model, 8, seed=step + 1)
            runner.train_step(xb, np.arange(8) % 10, SoftmaxCrossEntropy())
            optimizer.step()
    logits = fast.forward(x, training=False)
    assert fast._processes.split.broken is None
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT
    fast.close()


def test_a_child_that_dies_costs_a_warning_and_nothing_else():
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    x = batch(plain, 6)
    assert fast.start_processes(6)
    kill_the_child(fast)
    with pytest.warns(RuntimeWarning, match="back to threads: the child process exited"):
        logits = fast.forward(x, training=False)
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT
    logits = fast.forward(x, training=False)  # on the threads from now on
    assert fast._processes.split is None and fast._processes.failed
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT


def test_a_larger_batch_or_a_new_dtype_restarts_the_children(monkeypatch):
    monkeypatch.setattr(processes, "MIN_CAPACITY", 1)  # room for parts of 2 samples only
    plain, twin = make_net("fast"), make_net("fast")
    fast = compile(twin, workers=2)
    assert fast.start_processes(4)
    (first,) = children(fast)
    x = batch(plain, 10)
    logits = fast.forward(x, training=False)  # parts of 5 do not fit: threads, and a restart
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT
    assert not alive(first.process.pid)
    assert fast._processes.split.ready(wait=True)
    assert relative_error(fast.forward(x, training=False), plain.forward(x, training=False)) < EXACT
    (second,) = children(fast)
    for model in (plain, twin):
        model.astype(np.float32)
    logits = fast.forward(x, training=False)
    assert logits.dtype == np.float32 and not alive(second.process.pid)
    assert fast.start_processes(10)
    np.testing.assert_allclose(
        fast.forward(x, training=False), plain.forward(x, training=False), rtol=1e-4, atol=1e-5
    )
    fast.close()


def test_the_children_start_by_themselves_once_inference_has_run_a_while(monkeypatch):
    monkeypatch.setattr(processes, "START_AFTER_S", 1e-9)
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    x = batch(plain, 6)
    fast.forward(x[:1], training=False)  # a batch of one never counts
    assert fast._processes.waited == 0.0
    fast.forward(x, training=False)  # on the threads, timed
    assert not children(fast)
    fast.forward(x, training=False)  # starts them
    assert fast._processes.split.ready(wait=True)
    logits = fast.forward(x, training=False)
    assert fast._processes.split.broken is None
    assert relative_error(logits, plain.forward(x, training=False)) < EXACT
    fast.close()
    assert children(fast) == []


def test_the_children_stop_with_the_compiled_model():
    fast = compile(make_net("seed"), workers=2)
    assert fast.start_processes(8)
    pids = [child.process.pid for child in children(fast)]
    del fast
    gc.collect()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_threads_sharing_the_model_get_their_own_results():
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    assert fast.start_processes(8)
    xs = [batch(plain, 8, seed) for seed in range(4)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = fast.forward(xs[i], training=False)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, x in enumerate(xs):
        assert relative_error(results[i], plain.forward(x, training=False)) < EXACT
    fast.close()


def test_processes_can_be_switched_off(monkeypatch):
    model = make_net("keras")
    assert not compile(model, workers=2, processes=False).start_processes(8)
    assert not compile(model, workers=1).start_processes(8)
    monkeypatch.setenv("SCRATCHCNN_PROCESSES", "0")
    fast = compile(model, workers=2)
    assert not fast.start_processes(8)
    assert fast.process_parts(8) == [slice(0, 8)]


def test_a_net_with_batch_norm_needs_larger_training_parts_to_split(monkeypatch):
    """A split step waits for the child's sums at each batch norm: such nets split later."""
    monkeypatch.setattr(processes, "MIN_TRAIN_PART_VALUES", 1)
    monkeypatch.setattr(processes, "MIN_TRAIN_PART_VALUES_NORM", 10**12)
    keras, fast_net = make_net("keras"), make_net("fast")
    assert len(compile(keras, workers=2).process_parts(64, training=True)) == 2
    assert compile(fast_net, workers=2).process_parts(64, training=True) == [slice(0, 64)]
    assert len(compile(fast_net, workers=2).process_parts(64, training=False)) == 2


def test_the_ops_of_this_process_part_are_the_ones_a_split_step_runs():
    """``process_ops`` (for profiling) names the ops that run part 0 here."""
    model = make_net("keras")
    fast = compile(model, workers=2)
    with pytest.raises(RuntimeError, match="no child process"):
        fast.process_ops()
    assert fast.start_processes(8)
    calls = []
    for op in fast.process_ops(training=True):
        op.forward = lambda x, training=True, _f=op.forward: calls.append(1) or _f(x, training)
    fast.train_step(batch(model, 8), np.arange(8) % 10, SoftmaxCrossEntropy())
    assert len(calls) == len(fast.process_ops(training=True))
    fast.close()


def test_children_that_cannot_start_leave_the_threads_serving(monkeypatch):
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    monkeypatch.setattr(processes.sys, "executable", "/nonexistent/python")
    with pytest.warns(RuntimeWarning, match="could not start"):
        assert not fast.start_processes(6)
    x = batch(plain, 6)
    assert relative_error(fast.forward(x, training=False), plain.forward(x, training=False)) < EXACT
    assert fast._processes.split is None


def test_a_trainer_moves_to_the_children_by_itself_and_trains_as_on_the_threads(monkeypatch):
    """The default path end to end: ``Trainer`` (as ``scratchcnn train`` and
    ``Classifier.fit`` run it) starts the children once steps have taken START_AFTER_S, and
    the trained net is the one the threads train, bit for bit: dropout, batch norm, and the
    validation passes between epochs included."""
    from scratchcnn import build
    from scratchcnn.training.trainer import Trainer

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (96, 28, 28), dtype=np.uint8), rng.integers(0, 10, 96)
    val = (images[:40], labels[:40])
    monkeypatch.setattr(compiled, "blas_threads", lambda: 2)  # two workers, as on 2 cores
    monkeypatch.setattr(processes, "START_AFTER_S", 1e-9)  # started at the second step
    ready = processes.ProcessSplit.ready  # and waited for (it takes a second), not skipped
    monkeypatch.setattr(
        processes.ProcessSplit, "ready", lambda split, wait=False: ready(split, wait=True)
    )
    nets = {}
    for key, value in (("processes", "1"), ("threads", "0")):
        monkeypatch.setenv("SCRATCHCNN_PROCESSES", value)
        model = build("fast", seed=0)
        trainer = Trainer(
            model,
            SGD(model.parameters(), lr=0.05, momentum=0.9),
            (images, labels),
            2,
            16,
            0.1,
            0.3,
            val=val,
        )
        trainer.run()
        nets[key] = (model, trainer.runner)
    runner = nets["processes"][1]
    assert runner._processes.split.runs >= 10  # 12 steps and 2 validation passes, less one
    runner.close()
    assert nets["threads"][1]._processes is None
    for key, value in nets["processes"][0].state_dict().items():
        np.testing.assert_array_equal(value, nets["threads"][0].state_dict()[key], err_msg=key)


def test_parameter_arrays_replaced_after_the_start_are_the_ones_used():
    """A parameter array swapped for a new one (not written in place) must not leave part 0
    computing with the old one while the children get the new."""
    plain, twin = make_net("keras"), make_net("keras")
    fast = compile(twin, workers=2)
    x, y = batch(plain, 8), np.arange(8) % 10
    assert fast.start_processes(8)
    fast.train_step(x, y, SoftmaxCrossEntropy())
    plain.train_step(x, y, SoftmaxCrossEntropy())  # the same dropout draws
    for model in (plain, twin):
        model.layers[0].params["weight"] = model.layers[0].params["weight"] * 1.5
    step = fast.train_step(x, y, SoftmaxCrossEntropy())  # on the threads: children restart
    assert_same_step(step, twin, plain.train_step(x, y, SoftmaxCrossEntropy()), plain)
    assert fast._processes.split.ready(wait=True)
    step = fast.train_step(x, y, SoftmaxCrossEntropy())
    assert runs(fast) == 1
    assert_same_step(step, twin, plain.train_step(x, y, SoftmaxCrossEntropy()), plain)
    fast.close()
