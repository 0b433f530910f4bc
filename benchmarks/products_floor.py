"""The matrix products alone, against ONNX Runtime's and PyTorch's whole pass: how near the
speed targets of issues 13 and 18 an engine whose products are NumPy's can come.

    python benchmarks/products_floor.py [--rounds 9] [--seconds 0.2]

An im2col engine spends its multiply-adds in BLAS products: a conv's patches (M rows of K
values; M the outputs its pool reads) times its (K, F) weight, and in training the weight
gradient P^T @ G and the input gradient G @ W^T (none for the first layer); a dense layer
likewise. This times those products alone, one after another into memory made beforehand (no
gather, pool, mask, ReLU or Python of the engine's own), for each bench net, beside:

* inference, uint8 images to probabilities at batch 1 and 1000: ``Classifier.predict_proba``
  (ours) and ONNX Runtime on scratchcnn's own export (2 intra-op threads);
* training at batch 64, 128 and 256: the compiled ``train_step`` and an SGD step (ours) and
  PyTorch's step (as ``scratchcnn bench`` times them).

The products run with BLAS on the process's threads; on one thread (each product too); and,
for a batch of two or more, half the batch's on each of two threads at once with BLAS on one
thread each (how the engine splits a batch). On one thread they are cut into pieces as the
engine cuts them there, for OpenBLAS's small-matrix kernels (``scratchcnn.fast.products``).
``best`` is the least of these that uses both cores (at batch 1, of the first two).
``ceiling`` is the anchor's time over ``best``: the ratio an engine that spent nothing but
these products would reach. With BLAS on its threads, at batch 1000 they run as one product
over the whole batch, out of cache.

The ``floor`` adds to the products what an im2col engine cannot skip around them, as this
engine does it (``floor_steps``): each conv's input copied into padded memory and its patches
gathered, and in training the input gradient's col2im; inference in the engine's chunks,
training as its two parts; on one thread, the products in pieces. ``ceiling2`` is the
anchor's time over half the floor, as if the floor split perfectly over two cores. Where the
engine runs Winograd's F(2x2, 3x3) (a 3x3 conv with a 2x2 pool and 32 or more input
channels: the keras and fast nets' second conv, in inference at batch 1000 and in training's
backward) it multiplies less than these products; the user and seed nets have no such layer.
Writes benchmarks/results/products-floor.txt.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from scratchcnn import BatchNorm2D, Conv2D, Dense, MaxPool2D, ReLU
from scratchcnn.app import Classifier
from scratchcnn.app.bench import blas_info, cut, make_model, onnx_session, ours, theirs
from scratchcnn.app.export import build_graph
from scratchcnn.app.machine import cpu_model
from scratchcnn.fast import CompiledModel
from scratchcnn.fast import products as small
from scratchcnn.fast.inference import chunk_samples
from scratchcnn.fast.ops import conv_input_grad
from scratchcnn.fast.patches import PatchGather
from scratchcnn.fast.workspace import Workspace

OUT = Path(__file__).resolve().parent / "results" / "products-floor.txt"
NETS = ("seed", "keras", "fast", "user")
INFERENCE_BATCHES = (1, 1000)
TRAINING_BATCHES = (64, 128, 256)


def fused_layers(model) -> list[tuple[Conv2D | Dense, tuple[int, ...], tuple[int, int]]]:
    """(layer, input shape, pool) of each conv and dense layer: pool is the size of the max-pool
    of stride = size fused with a conv (a norm or a ReLU may come between), else (1, 1)."""
    found, shape, layers = [], model.input_shape, model.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, (Conv2D, Dense)):
            pool = (1, 1)
            after = [x for x in layers[i + 1 : i + 4] if not isinstance(x, (BatchNorm2D, ReLU))]
            if isinstance(layer, Conv2D) and after and isinstance(after[0], MaxPool2D):
                if after[0].stride == after[0].pool_size:
                    pool = after[0].pool_size
            found.append((layer, shape, pool))
        shape = layer.output_shape(shape)
    return found


def product_shapes(model) -> list[tuple[int, int, int]]:
    """(M, K, F) of each layer's forward product for one image: a conv's patches (M rows of K
    values; only the outputs its fused pool reads) times its weight (K, F); a dense layer's
    (1, in) times (in, out)."""
    shapes = []
    for layer, shape, (ph, pw) in fused_layers(model):
        if isinstance(layer, Dense):
            shapes.append((1, layer.in_features, layer.out_features))
            continue
        oh, ow, f = layer.output_shape(shape)
        kh, kw = layer.kernel_size
        shapes.append(((oh // ph * ph) * (ow // pw * pw), kh * kw * layer.in_channels, f))
    return shapes


def products(
    shapes: list[tuple[int, int, int]], batch: int, training: bool, pieces: bool = False
) -> list[tuple[str, Callable[[], object]]]:
    """(name, function) of each product of a pass over ``batch`` images, into memory made
    now: the forward products, and in training each layer's weight gradient and (but the
    first layer's) input gradient. ``pieces``: cut as the engine cuts them where BLAS runs
    on one thread (``scratchcnn.fast.products``)."""
    rng = np.random.default_rng(0)
    found = []
    for index, (m, k, f) in enumerate(shapes):
        rows = m * batch
        patches, weight = rng.random((rows, k), np.float32), rng.random((k, f), np.float32)
        grad = rng.random((rows, f), np.float32)
        forward = np.empty((rows, f), np.float32)
        found.append(
            (f"{m}x{k}x{f}", functools.partial(small.matmul, patches, weight, forward, pieces))
        )
        if training:
            found.append(("dW", functools.partial(small.weight_grad, patches, grad, pieces)))
            if index > 0:
                dx = np.empty((rows, k), np.float32)
                found.append(("dX", functools.partial(small.matmul, grad, weight.T, dx, pieces)))
    return found


def floor_steps(model, batch: int, training: bool) -> list[Callable[[], object]]:
    """What an im2col engine cannot skip, for ``batch`` images, into memory kept from call to
    call: each conv's patch gather (the engine's own ``PatchGather``, in pool order, its views
    made once: ``ConvFloor``) and its product; in training also the weight gradient and (but
    for the first layer) the input gradient with its col2im (``Conv2D.input_grad``, as the
    engine calls it); a dense layer's products. In inference a conv runs chunk by chunk as the
    engine runs it (conv maps of about ``inference.CHUNK_BYTES``), so each chunk's product
    finds its patches in cache. No pool, ReLU, mask, norm or Python of the engine's own."""
    rng, steps = np.random.default_rng(0), []
    for index, (layer, shape, pool) in enumerate(fused_layers(model)):
        x = rng.random((batch, *shape), np.float32)
        if isinstance(layer, Dense):
            weight = np.ascontiguousarray(layer.params["weight"].T)  # (in, out)
            grad = rng.random((batch, layer.out_features), np.float32)
            out = np.empty_like(grad)
            steps.append(functools.partial(small.matmul, x, weight, out, True))
            if training:
                steps.append(functools.partial(small.weight_grad, x, grad, True))
                dx = np.empty_like(x)
                steps.append(functools.partial(small.matmul, grad, weight.T, dx, True))
            continue
        oh, ow, f = layer.output_shape(shape)
        (ph, pw), offsets = pool, pool[0] * pool[1]
        qh, qw = oh // ph, ow // pw
        step = batch if training else min(batch, chunk_samples(offsets, qh * qw * f, 4))
        steps.append(ConvFloor(layer, x, step, pool, training, training and index > 0))
    return steps


class ConvFloor:
    """``ConvFloor(conv, x, step, pool, training, input_grad)``: one conv's share of
    ``floor_steps`` over ``x``, chunks of ``step`` images at a time; calling it runs it. As the
    engine's kept memory does (``inference.BatchMemory``), the padded input and the strided
    views that gather the patches are made once: a call copies each chunk inside the padded
    memory, gathers, and multiplies."""

    def __init__(
        self,
        conv: Conv2D,
        x: np.ndarray,
        step: int,
        pool: tuple[int, int],
        training: bool,
        input_grad: bool,
    ) -> None:
        self.conv, self.x, self.step = conv, x, step
        self.training, self.input_grad = training, input_grad
        self.work, self.weight = Workspace(), np.ascontiguousarray(conv.weight_matrix())
        (ph, pw), (h, w) = conv.padding, x.shape[1:3]
        self.gathers = {}  # chunk size -> (the padded input's inside, its gather)
        for m in {min(step, len(x)), len(x) % step or step}:
            xp = np.zeros((m, h + 2 * ph, w + 2 * pw, x.shape[3]), np.float32)
            single = x.shape[3] == 1  # as patch_matrix gathers one channel
            gather = PatchGather(xp, conv.kernel_size, conv.stride, single, pool, self.work)
            self.gathers[m] = (xp[:, ph : ph + h, pw : pw + w], gather)
        oh, ow, f = conv.output_shape(x.shape[1:])
        self.read = (oh // pool[0] * pool[0], ow // pool[1] * pool[1], f)  # what the pool reads
        rows = self.read[0] * self.read[1] * min(step, len(x))
        self.grad = np.random.default_rng(1).random((rows, f), np.float32)
        self.maps = np.empty((rows, f), np.float32)

    def __call__(self) -> None:
        for i in range(0, len(self.x), self.step):
            chunk = self.x[i : i + self.step]
            inside, gather = self.gathers[len(chunk)]
            np.copyto(inside, chunk)
            gather()
            patches = gather.matrix
            rows = len(patches)
            small.matmul(patches, self.weight, self.maps[:rows], True)
            if self.training:
                small.weight_grad(patches, self.grad[:rows], True)
            if self.input_grad:  # dL/dy in plain order
                grad = self.grad[:rows].reshape(len(chunk), *self.read)
                conv_input_grad(self.conv, grad, chunk.shape, self.work, True)


def in_turn(functions: list[Callable[[], object]]) -> Callable[[], None]:
    """A function that calls ``functions`` one after another."""

    def run() -> None:
        for function in functions:
            function()

    return run


def seconds_a_call(fn: Callable[[], object], seconds: float) -> float:
    """Mean seconds of a call of ``fn`` over about ``seconds`` of calls (one call at least)."""
    fn()
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count


def anchors(arch: str, batch: int, training: bool) -> dict[str, Callable[[], None]]:
    """Our pass and the anchor's (PyTorch's training step, ONNX Runtime's inference)."""
    if training:
        return {"ours": ours(arch, batch)[0], "anchor": theirs(arch, batch, 2)[0]}
    model = make_model(arch)
    clf = Classifier(model, arch)
    images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    session = onnx_session(build_graph(clf).SerializeToString(), 2)
    if isinstance(clf.runner, CompiledModel):  # the steady state, as the bench has it
        clf.runner.start_processes(batch)
    return {"ours": lambda: clf.predict_proba(images), "anchor": lambda: session(images)}


def measure(arch: str, batch: int, training: bool, rounds: int, seconds: float) -> dict:
    """Median seconds a call of each timing over ``rounds`` interleaved rounds."""
    calls = anchors(arch, batch, training)
    shapes = product_shapes(make_model(arch))
    each = products(shapes, batch, training)  # whole: BLAS on its threads
    functions = [function for _, function in each]
    # on one thread the engine cuts them into pieces (scratchcnn.fast.products)
    one_thread = [function for _, function in products(shapes, batch, training, pieces=True)]
    keys = ["ours", "anchor", "products", "one_thread", "floor"]
    # the floor on one thread: in training the engine's two parts one after the other
    model, parts = make_model(arch), (batch // 2, batch - batch // 2) if training else (batch,)
    floor = in_turn([f for part in parts if part for f in floor_steps(model, part, training)])
    halves = None
    if batch > 1:  # half the batch on each of two threads at once, BLAS on one thread each
        keys.append("two_threads")
        halves = [in_turn([f for _, f in products(shapes, half, training, True)]) for half in
                  (batch // 2, batch - batch // 2)]  # fmt: skip
        pool = ThreadPoolExecutor(2)
    timings: dict = {key: [] for key in keys}
    timings.update((i, []) for i in range(len(each)))
    for _ in range(rounds):
        for key in ("ours", "anchor"):
            timings[key].append(seconds_a_call(calls[key], seconds))
        timings["products"].append(seconds_a_call(in_turn(functions), seconds))
        with threadpool_limits(1, "blas"):
            timings["one_thread"].append(seconds_a_call(in_turn(one_thread), seconds))
            timings["floor"].append(seconds_a_call(floor, seconds))
            for i, function in enumerate(one_thread):
                timings[i].append(seconds_a_call(function, seconds / len(functions)))
            if halves is not None:
                both = lambda: wait([pool.submit(half) for half in halves])  # noqa: E731
                timings["two_threads"].append(seconds_a_call(both, seconds))
    if halves is not None:
        pool.shutdown()
    row = {key: statistics.median(values) for key, values in timings.items()}
    row["best"] = min(row["products"], row.get("two_threads", row["one_thread"]))
    row["names"] = [name for name, _ in each]
    return row


def line(arch: str, batch: int, row: dict, unit: float) -> str:
    """One table row, times in ``unit`` seconds."""
    t = {key: value / unit for key, value in row.items() if not isinstance(value, list)}
    each = " ".join(f"{name} {t[i]:.1f}" for i, name in enumerate(row["names"]))
    return (
        f"{arch:<6} {batch:>5} | {t['ours']:8.1f} {t['anchor']:8.1f} | {t['products']:8.1f} "
        f"{t['one_thread']:8.1f} {t.get('two_threads', float('nan')):9.1f} {t['best']:8.1f} | "
        f"{cut(row['anchor'] / row['ours']):5.2f} "
        f"{cut(row['anchor'] / row['best']):7.2f} | {t['floor']:8.1f} "
        f"{cut(2 * row['anchor'] / row['floor']):8.2f} | {each}"
    )


def header(anchor: str, unit: str) -> str:
    return (
        f"{'net':<6} {'batch':>5} | {'ours':>8} {anchor:>8} | {'products':>8} {'1 thread':>8} "
        f"{'2 threads':>9} {'best':>8} | {'ratio':>5} {'ceiling':>7} | {'floor':>8} "
        f"{'ceiling2':>8} | "
        f"each product on one thread, {unit}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument(
        "--seconds", type=float, default=0.2, help="seconds of calls a timing (default 0.2)"
    )
    parser.add_argument("--nets", nargs="+", default=list(NETS), help="nets (default: all)")
    args = parser.parse_args()
    info = blas_info()
    lines = [
        f"{cpu_model()}, {info['name']} on {info['threads']} thread(s); medians of "
        f"{args.rounds} interleaved rounds",
        "products: the pass's matrix products alone (BLAS on the process's threads); 1 thread: "
        "the same on one thread; 2 threads: half the batch's on each of two threads at once, "
        "BLAS on one thread each; best: the least of products and 2 threads (1 thread at "
        "batch 1); ratio: our rate over the anchor's; ceiling: the anchor's time over best; "
        "floor: the products with the patch gathers and col2im an im2col engine cannot skip, "
        "inference in the engine's chunks, on one thread (floor_steps); ceiling2: the anchor's "
        "time over half the floor, as if the floor split perfectly over two cores",
        "inference, uint8 images to probabilities, microseconds an image; anchor: ONNX Runtime "
        "on scratchcnn's export, 2 threads; each product: M x K x F of an image",
        header("ORT", "us an image"),
    ]
    print("\n".join(lines), flush=True)
    for arch in args.nets:
        for batch in INFERENCE_BATCHES:
            row = measure(arch, batch, False, args.rounds, args.seconds)
            lines.append(line(arch, batch, row, 1e-6 * batch))
            print(lines[-1], flush=True)
    lines += [
        "training, compiled train_step + SGD step, milliseconds a step; anchor: PyTorch, 2 "
        "threads; each product: the forward's M x K x F of an image, then its weight gradient "
        "(dW) and input gradient (dX)",
        header("torch", "ms a step"),
    ]
    print("\n".join(lines[-2:]), flush=True)
    for arch in args.nets:
        for batch in TRAINING_BATCHES:
            row = measure(arch, batch, True, args.rounds, args.seconds)
            lines.append(line(arch, batch, row, 1e-3))
            print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
