"""Whether inference through a 3x3 conv + 2x2 max-pool should run as Winograd's F(2x2, 3x3)
(``src/scratchcnn/fast/winograd.py``), from how many input channels, and in chunks of what size.

    python benchmarks/winograd.py

Times ``Classifier.predict_proba`` on 1,000 random uint8 images for the nets with such a
layer, with Winograd off and on (from 32 input channels, at several ``CHUNK_BYTES``; and from
16 channels, which adds the bench's user net's second conv), in alternating order over 12
rounds of two calls each; the median rate of each. Then batches small enough to run as one
chunk: single layers (conv + ReLU + pool) of several shapes at batch 1 and 4, and whole nets
at batch 1, with the memory such a batch keeps (patches), or new memory and patches, or new
memory and Winograd, interleaved. All that on worker threads, not child processes: the
settings are this process's module constants. Last, training (where only the backward pass
runs as Winograd) on the default path, this process and a child process, with and without
Winograd (two compiled twins, their children started with SCRATCHCNN_WINOGRAD set each way),
alternating over 10 rounds of four steps. Writes benchmarks/results/winograd.txt.
"""

from __future__ import annotations

import os

os.environ["SCRATCHCNN_PROCESSES"] = "0"  # the children would not see the settings below
# (training() turns them on for its own twins)

import functools  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from scratchcnn import Conv2D, MaxPool2D, ReLU, SoftmaxCrossEntropy  # noqa: E402
from scratchcnn.app import Classifier  # noqa: E402
from scratchcnn.app.bench import make_model  # noqa: E402
from scratchcnn.fast import (  # noqa: E402
    blas_threads,
    compile,
    inference,
    keep_freed_memory,
    winograd,
)
from scratchcnn.fast.inference import ConvInferenceOp  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "winograd.txt"
# name -> (ENABLED, MIN_CHANNELS, CHUNK_BYTES)
SETTINGS = {
    "off": (False, 32, 1 << 20),
    "32ch 256K": (True, 32, 256 << 10),
    "32ch 512K": (True, 32, 512 << 10),
    "32ch 1M": (True, 32, 1 << 20),
    "32ch 2M": (True, 32, 2 << 20),
    "16ch 1M": (True, 16, 1 << 20),
}
USED = "32ch 1M"  # MIN_CHANNELS and CHUNK_BYTES in winograd.py
ROUNDS = 12
# (in, out, input size) of a conv 3x3 + ReLU + max-pool 2: the keras net's second conv, the
# photo net's second and fourth, the user net's second (padded in that net)
LAYERS = [(32, 64, 13), (32, 32, 26), (64, 64, 10), (16, 32, 16)]


def alternating_medians(names: list, measure: Callable[[Any], float], rounds: int) -> dict:
    """The median of ``measure(name)`` for each of ``names``, over ``rounds`` rounds in
    alternating order (forwards, then backwards), so that no name always runs first."""
    figures: dict = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 else names[::-1]:
            figures[name].append(measure(name))
    return {name: statistics.median(f) for name, f in figures.items()}


def call_us(call: Callable[[], object], repeats: int, name: str) -> float:
    """Microseconds a call of ``call()`` with ``ONE_CHUNK[name]`` applied, over ``repeats``."""
    ONE_CHUNK[name]()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def one_at_a_time(clf: Classifier, images: np.ndarray):
    """A call that reads the next of ``images`` (round and round) alone."""
    singles = itertools.cycle(images[:, None])
    return lambda: clf.predict_proba(next(singles))


def setting(memory_shapes: int, enabled: bool):
    def apply() -> None:
        inference.MEMORY_SHAPES, winograd.ENABLED = memory_shapes, enabled

    return apply


# A batch that runs as one chunk: with its kept memory (patches: what runs), or in new memory
# each call, with patches or with Winograd (what it could run instead).
ONE_CHUNK = {
    "kept patches": setting(inference.MEMORY_SHAPES, False),
    "new patches": setting(0, False),
    "new Winograd": setting(0, True),
}


def one_chunk(lines: list[str]) -> None:
    """Batches small enough to run as one chunk, each way of ``ONE_CHUNK``."""
    lines.append(
        "batches run as one chunk, microseconds a call (median of 10 interleaved rounds): "
        + ", ".join(ONE_CHUNK)
    )
    winograd.MIN_CHANNELS, winograd.CHUNK_BYTES = 16, 1 << 20
    rng = np.random.default_rng(0)
    for cin, cout, size in LAYERS:
        op = ConvInferenceOp(Conv2D(cin, cout, 3), None, MaxPool2D(2), ReLU())
        for n in (1, 4):
            x = rng.random((n, size, size, cin), dtype=np.float32)
            call = functools.partial(op.forward, x, training=False)
            us = alternating_medians(list(ONE_CHUNK), functools.partial(call_us, call, 200), 10)
            row = "".join(f"{t:8.1f}" for t in us.values())
            lines.append(f"conv {cin:>2} -> {cout:>2} on {size}x{size}, batch {n}: {row}")
            print(lines[-1], flush=True)
    winograd.MIN_CHANNELS = 32
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    for arch in ("keras", "fast", "photo"):
        clf = Classifier(make_model(arch, seed=0), arch)
        call = one_at_a_time(clf, images)
        us = alternating_medians(list(ONE_CHUNK), functools.partial(call_us, call, 300), 10)
        row = "".join(f"{t:8.1f}" for t in us.values())
        lines.append(f"{arch:<5} predict_proba of one image:     {row}")
        print(lines[-1], flush=True)
    ONE_CHUNK["kept patches"]()


def step_rate(twins: dict, x: np.ndarray, y: np.ndarray, loss, on: bool) -> float:
    """Images a second over four training steps of ``twins[on]``, Winograd ``on`` in this
    process (its part) as in that twin's child, after one step unmeasured."""
    winograd.ENABLED = on
    twins[on].train_step(x, y, loss)
    start = time.perf_counter()
    for _ in range(4):
        twins[on].train_step(x, y, loss)
    return 4 * len(x) / (time.perf_counter() - start)


def predict_rate(clf: Classifier, images: np.ndarray, expected: np.ndarray, name: str) -> float:
    """Images a second over two ``predict_proba`` calls on ``images`` under ``SETTINGS[name]``,
    after a short one unmeasured; the probabilities checked against ``expected``."""
    winograd.ENABLED, winograd.MIN_CHANNELS, winograd.CHUNK_BYTES = SETTINGS[name]
    clf.predict_proba(images[:100])
    start = time.perf_counter()
    clf.predict_proba(images)
    got = clf.predict_proba(images)
    rate = 2 * len(images) / (time.perf_counter() - start)
    assert np.abs(got - expected).max() < 1e-4, name
    return rate


def training(lines: list[str]) -> None:
    """Training steps on the default path, Winograd's backward on (children started with it)
    and off, alternating."""
    lines.append(
        "training images/s, train_step on the default path (this process and a child), "
        "median of 10 alternating rounds of 4 steps: Winograd's backward off, on, on / off"
    )
    rng = np.random.default_rng(0)
    loss = SoftmaxCrossEntropy()
    for arch in ("keras", "photo"):
        twins = {}
        for on in (False, True):
            os.environ["SCRATCHCNN_WINOGRAD"] = "1" if on else "0"  # the children's setting
            twins[on] = compile(make_model(arch, seed=0), processes=True)
            twins[on].start_processes(256)
        os.environ.pop("SCRATCHCNN_WINOGRAD")
        for batch in (64, 256):
            x = rng.random((batch, 28, 28, 1), dtype=np.float32)
            y = rng.integers(0, 10, batch)
            measure = functools.partial(step_rate, twins, x, y, loss)
            off, on = alternating_medians([False, True], measure, 10).values()
            lines.append(f"{arch:<6} batch {batch:>3}: {off:8,.0f} {on:8,.0f}   {on / off:.2f}")
            print(lines[-1], flush=True)
        for twin in twins.values():
            twin.close()
    winograd.ENABLED = True


def main() -> None:
    keep_freed_memory()  # as the bench runs
    images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    lines = [
        f"images/s, predict_proba on 1,000 images, {blas_threads()} worker thread(s), "
        f"median of {ROUNDS} interleaved rounds; Winograd off, or on from N input channels "
        f"with chunks of M about CHUNK_BYTES; last column: {USED} (the library's) over off",
        "net   " + "".join(f"{name:>11}" for name in SETTINGS),
    ]
    for arch in ("keras", "fast", "user", "photo"):
        clf = Classifier(make_model(arch, seed=0), arch)
        expected = clf.predict_proba(images)
        measure = functools.partial(predict_rate, clf, images, expected)
        medians = alternating_medians(list(SETTINGS), measure, ROUNDS)
        row = "".join(f"{rate:11,.0f}" for rate in medians.values())
        lines.append(f"{arch:<6}{row}   {medians[USED] / medians['off']:.2f}")
        print(lines[-1], flush=True)
    one_chunk(lines)
    training(lines)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
