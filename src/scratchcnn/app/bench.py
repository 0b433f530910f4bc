"""Benchmark: scratchcnn against PyTorch on the CPU, same nets, batch sizes and threads.

For each architecture and batch size it times training steps (forward + backward + SGD with
momentum) and inference at batch 1000, after a warm-up, as the median of several repeats that
alternate between the two libraries (so that drifts in machine speed hit both alike). It also
measures the float32 GEMM peak of this machine (a large square product) and reports each net's
training FLOP/s as a share of it: against the product timed in the same rounds as the training
(the "%peak" column), and against the fastest of ten products timed at the start. PyTorch is
optional: without it only our figures are printed.

Inference is also timed against ONNX Runtime, at batch 1 and 1000, from raw uint8 images to
probabilities: our ``Classifier.predict_proba`` (compiled path), ONNX Runtime running the graph
``scratchcnn export`` writes for the same net, and (with PyTorch) ONNX Runtime running the
PyTorch twin exported by ``torch.onnx.export``, and PyTorch itself. ONNX Runtime gets the
same number of threads. Our compiled path splits a batch of 1000 over this process and child
processes (``scratchcnn.fast.processes``), one per further BLAS thread, started before the
timing (in use they start once inference has run two seconds): as many cores as ONNX Runtime's
threads.

Every column runs under the same allocator: glibc's malloc set to keep and reuse freed memory,
as ``scratchcnn train --plain`` sets it (``scratchcnn.fast.keep_freed_memory``; it speeds up the
plain engine and PyTorch alike); ``--system-malloc`` leaves malloc as the system set it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from .. import __version__
from ..fast import CompiledModel, compile, keep_freed_memory, winograd
from ..fast.convpool import ConvPoolOp
from ..fileio import atomic_write
from ..nn import (
    SGD,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
)
from ..training import build
from . import machine
from .classifier import Classifier
from .export import build_graph


def blas_info() -> dict:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"name": "unknown (pip install threadpoolctl)", "threads": os.cpu_count()}
    # NumPy's BLAS first: SciPy (imported by the photo code) loads its own OpenBLAS too, and
    # whichever was loaded first would otherwise be the one named.
    pools = sorted(threadpool_info(), key=lambda pool: "numpy" not in pool.get("filepath", ""))
    for pool in pools:
        if pool.get("user_api") == "blas":
            return {
                "name": f"{pool['internal_api']} {pool.get('version')}",
                "architecture": pool.get("architecture"),
                # OpenBLAS takes the kernels this names instead of those it finds for the CPU
                # (some machines set it: older OpenBLAS builds fail on their CPU)
                "coretype_set": os.environ.get("OPENBLAS_CORETYPE"),
                "threads": pool["num_threads"],
            }
    return {"name": "unknown", "threads": os.cpu_count()}


def square_product(size: int = 2048) -> Callable[[], None]:
    """A closure computing one float32 (size x size) @ (size x size) product."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    return lambda: a @ b


def fastest_call(fn: Callable[[], object], repeats: int) -> float:
    """The least seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_peak(size: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of a large square matrix product: the fastest of ``repeats`` (a peak is
    what the machine can do; a slow spell during the measurement must not lower it)."""
    return 2 * size**3 / fastest_call(square_product(size), repeats) / 1e9


def cut(ratio: float) -> float:
    """A ratio cut, not rounded, to two places: 0.4954 never reads as a target's 0.50."""
    return math.floor(ratio * 100) / 100


def user_net(num_classes: int = 10) -> list:
    """A net no recipe names, as a user would write it: 5x5 and 3x3 kernels with padding, and
    a last convolution with no pool after it."""
    return [
        Conv2D(1, 16, 5, padding=2),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1),
        ReLU(),
        MaxPool2D(2),
        Conv2D(32, 64, 3),
        ReLU(),
        Flatten(),
        Dense(1600, num_classes),
    ]


BENCH_NETS = {"user": user_net}


def make_model(arch: str, seed: int = 0) -> Sequential:
    """A named architecture, or one of ``BENCH_NETS``."""
    if arch in BENCH_NETS:
        return Sequential(BENCH_NETS[arch](), seed=seed)
    return build(arch, seed=seed)


def training_flops(model: Sequential, executed: bool = True) -> float:
    """FLOPs of one training sample: forward, weight gradients, and input gradients of every
    layer but the first (multiply-adds counted as 2; element-wise work ignored).

    ``executed``: count what the compiled path computes, which skips the conv outputs that a
    ragged pool edge drops (the keras net's second conv: 100 of 121 outputs per channel), and
    whose backward pass of a fused 3x3 conv + 2x2 pool with enough channels runs as
    Winograd's F(2x2, 3x3) where BLAS has one thread, as in the bench's split batches (its
    products and transforms: ``fast/winograd.py``); otherwise the reference net's FLOPs, all
    outputs counted, all gradients by patches."""
    outputs = {
        id(layer): shape for layer, shape in zip(model.layers, model.output_shapes, strict=True)
    }
    by_winograd = set()
    if executed:
        for op in compile(model, workers=1).ops:
            if isinstance(op, ConvPoolOp):
                (qh, qw, f), (ph, pw) = outputs[id(op.pool)], op.pool.pool_size
                outputs[id(op.conv)] = (qh * ph, qw * pw, f)
                if winograd.applies(op.conv, op.pool.pool_size):
                    by_winograd.add(id(op.conv))
    total = 0.0
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Conv2D):
            kh, kw = layer.kernel_size
            c, f = layer.in_channels, layer.out_channels
            forward = math.prod(outputs[id(layer)]) * kh * kw * c
            if id(layer) in by_winograd:  # per 2x2 tile: V, dM, dU; then dV and dd
                tiles = math.prod(outputs[id(layer)][:2]) // 4
                grads = tiles * 16 * (16 * c + 4 * f + c * f)
                grads += 0 if i == 0 else tiles * 16 * (f * c + 16 * c)
                total += 2 * (forward + grads)
                continue
            macs = forward
        elif isinstance(layer, Dense):
            macs = layer.in_features * layer.out_features
        else:
            continue
        total += 2 * macs * (2 if i == 0 else 3)
    return total


def median_rate(fn: Callable[[], None], samples: int, seconds: float) -> Callable[[], float]:
    """A closure that runs ``fn`` for about ``seconds`` and returns samples per second."""

    def once() -> float:
        count, start = 0, time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return count * samples / elapsed

    return once


def ours(
    arch: str, batch: int, threads: int | None = None, plain: bool = False, processes: bool = True
):
    """Our training step and inference pass: through the compiled twin (``threads``: worker
    threads, None: as many as BLAS has; ``processes``: its child processes started now, for
    the steady state, rather than after two seconds of steps), or through the plain model
    (``plain``)."""
    rng = np.random.default_rng(0)
    model = make_model(arch)
    runner = model if plain else compile(model, threads, None if processes else False)
    if not plain:
        runner.start_processes(max(batch, 1000))
    x = rng.standard_normal((batch, *model.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    xi = rng.standard_normal((1000, *model.input_shape), dtype=np.float32)
    loss = SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train() -> None:
        runner.train_step(x, y, loss)  # forward, loss and backward
        opt.step()

    def infer() -> None:
        runner.forward(xi, training=False)

    return train, infer


def torch_twin(model: Sequential):
    """The same net in PyTorch (its own random weights: speed does not depend on them). NCHW
    convolutions, then back to NHWC before the flatten, as ours."""
    import torch

    nn = torch.nn

    class Nhwc(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    modules = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            modules.append(
                nn.Conv2d(
                    layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                    layer.padding,
                )
            )  # fmt: skip
        elif isinstance(layer, ReLU):
            modules.append(nn.ReLU())
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.pool_size, layer.stride))
        elif isinstance(layer, Flatten):
            modules += [Nhwc(), nn.Flatten()]
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, Dense):
            modules.append(nn.Linear(layer.in_features, layer.out_features))
        elif isinstance(layer, BatchNorm2D):
            modules.append(nn.BatchNorm2d(layer.num_features))
        elif isinstance(layer, BatchNorm1D):
            modules.append(nn.BatchNorm1d(layer.num_features))
        else:
            raise ValueError(f"no PyTorch twin for {layer!r}")
    return nn.Sequential(*modules)


def theirs(arch: str, batch: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(arch)
    net = torch_twin(model)
    h, w, c = model.input_shape
    x = torch.randn(batch, c, h, w)
    y = torch.randint(0, 10, (batch,))
    xi = torch.randn(1000, c, h, w)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train() -> None:
        net.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    def infer() -> None:
        net.eval()
        with torch.inference_mode():
            net(xi)

    return train, infer


def compare(
    arch: str,
    batch: int,
    threads: int,
    repeats: int,
    seconds: float,
    with_torch: bool,
    flops: float | None = None,
    plain: bool = True,
) -> dict:
    """One row: our training and inference rates, compiled and (with ``plain``) through the
    plain engine, and PyTorch's: medians of ``repeats``
    interleaved timings. With ``flops`` (per training sample) the GEMM peak is timed in the
    same rounds, right after our training, and the row gets the median over rounds of our
    training FLOP/s as a percentage of that round's peak: the machine's speed drifts by up to
    2x, and a peak timed minutes earlier would measure the drift, not the engine."""
    our_train, our_infer = ours(arch, batch, threads)
    runs = {"ours_train": median_rate(our_train, batch, seconds)}
    if flops is not None:
        size = 2048
        runs["gemm_gflops"] = median_rate(square_product(size), 2 * size**3 / 1e9, seconds)
    runs["ours_infer"] = median_rate(our_infer, 1000, seconds)
    if plain:  # the engine a learner reads, every layer as its file reads
        plain_train, plain_infer = ours(arch, batch, plain=True)
        runs["plain_train"] = median_rate(plain_train, batch, seconds)
        runs["plain_infer"] = median_rate(plain_infer, 1000, seconds)
    if with_torch:
        their_train, their_infer = theirs(arch, batch, threads)
        runs["torch_train"] = median_rate(their_train, batch, seconds)
        runs["torch_infer"] = median_rate(their_infer, 1000, seconds)
    for run in runs.values():  # warm-up: caches, allocator, thread pools
        run()
    rates: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):  # interleaved, so a slow spell hits both libraries
        for key, run in runs.items():
            rates[key].append(run())
    row = {key: statistics.median(values) for key, values in rates.items()}
    row.update(arch=arch, batch=batch, rounds=rates)
    if flops is not None:
        rounds = zip(rates["ours_train"], rates["gemm_gflops"], strict=True)
        percents = [100 * rate * flops / 1e9 / peak for rate, peak in rounds]
        row["percent_of_peak"] = statistics.median(percents)
        row["rounds"]["percent_of_peak"] = percents
        row["train_gflops"] = row["ours_train"] * flops / 1e9
    if with_torch:
        row["train_ratio"] = row["ours_train"] / row["torch_train"]
        row["infer_ratio"] = row["ours_infer"] / row["torch_infer"]
        if plain:
            row["plain_train_ratio"] = row["plain_train"] / row["torch_train"]
            row["plain_infer_ratio"] = row["plain_infer"] / row["torch_infer"]
    return row


def onnx_session(graph: bytes, threads: int) -> Callable[[np.ndarray], list]:
    """An ONNX Runtime CPU session of ``graph`` on ``threads`` threads, as a function."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def torch_onnx(model: Sequential) -> tuple[object, bytes]:
    """The PyTorch twin of ``model`` in eval mode and its ONNX export (float NCHW input,
    normalised; the batch axis dynamic)."""
    import io

    import torch

    net = torch_twin(model).eval()
    buffer = io.BytesIO()
    dummy = torch.zeros(1, *reversed(model.input_shape))  # (1, C, H, W) as (1, 1, 28, 28)
    torch.onnx.export(
        net, (dummy,), buffer, input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return net, buffer.getvalue()


def inference(
    arch: str, batch: int, threads: int, repeats: int, seconds: float, with_torch: bool
) -> dict:
    """One row of the inference table: images per second from uint8 images (batch, 28, 28)
    to probabilities, ours against ONNX Runtime (and PyTorch's export and PyTorch), as medians
    of ``repeats`` interleaved timings."""
    rng = np.random.default_rng(0)
    model = make_model(arch)
    clf = Classifier(model, arch)
    images = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    our_onnx = onnx_session(build_graph(clf).SerializeToString(), threads)
    if isinstance(clf.runner, CompiledModel):  # the steady state: not wait for them to start
        clf.runner.start_processes(batch)
    runs = {
        "ours": median_rate(lambda: clf.predict_proba(images), batch, seconds),
        "ort_ours": median_rate(lambda: our_onnx(images), batch, seconds),
    }
    if with_torch:
        import torch

        torch.set_num_threads(threads)
        net, graph = torch_onnx(model)
        x = ((images.astype(np.float32) / 255 - clf.mean) / clf.std)[:, None]
        their_onnx = onnx_session(graph, threads)
        tx = torch.from_numpy(x)

        def torch_infer() -> None:
            with torch.inference_mode():
                torch.softmax(net(tx), dim=1)

        runs["ort_torch"] = median_rate(lambda: their_onnx(x), batch, seconds)
        runs["torch"] = median_rate(torch_infer, batch, seconds)
    for run in runs.values():
        run()
    rates: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            rates[key].append(run())
    row = {key: statistics.median(values) for key, values in rates.items()}
    row.update(arch=arch, batch=batch, rounds=rates, ratio_ort=row["ours"] / row["ort_ours"])
    if with_torch:
        row["ratio_ort_torch"] = row["ours"] / row["ort_torch"]
    return row


# VmHWM (peak RSS) starts afresh with exec; ru_maxrss would carry over the parent's peak.
MEMORY_SNIPPET = """
import sys
from scratchcnn.app.bench import ours, theirs

def peak_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

arch, batch, lib = sys.argv[1], int(sys.argv[2]), sys.argv[3]
threads = int(sys.argv[4])
if sys.argv[5] == "1":
    from scratchcnn.fast import keep_freed_memory
    keep_freed_memory()
if lib == "ours":  # a child process's memory would not count here: off (on the threads)
    train, _ = ours(arch, batch, threads, processes=False)
else:
    train, _ = theirs(arch, batch, threads)
base = peak_kib()
for _ in range(5):
    train()
print(peak_kib(), base)
"""


def peak_memory(arch: str, batch: int, lib: str, threads: int, keep_memory: bool = False) -> dict:
    """Peak RSS (MiB) of a fresh process training ``arch``: in all, and above what it had
    after importing its library and building the net (Linux only). ``keep_memory``: with the
    allocator set as ``keep_freed_memory`` sets it, as the bench's own process is."""
    flag = str(int(keep_memory))
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SNIPPET, arch, str(batch), lib, str(threads), flag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    peak, base = int(out[0]) / 1024, int(out[1]) / 1024
    return {"peak_mib": peak, "training_mib": peak - base}


def epoch_seconds(arch: str, batch: int, data_dir: str | None) -> float | None:
    """Seconds for one epoch over the real 60,000 MNIST images (None if they are not found)."""
    from ..data import load
    from ..errors import DataError
    from .classifier import Classifier

    try:
        images, labels = load("mnist", "train", data_dir)
    except DataError:
        return None
    clf = Classifier.create(arch, seed=0)
    start = time.perf_counter()
    clf.fit(images, labels, epochs=1, batch_size=batch, lr=0.01, optimizer="sgd", momentum=0.9)
    return time.perf_counter() - start


def run(
    archs: tuple[str, ...] = ("seed", "keras", "user"),
    batches: tuple[int, ...] = (64, 128, 256),
    repeats: int = 5,
    seconds: float = 1.0,
    data_dir: str | None = None,
    with_torch: bool | None = None,
    epochs: bool = True,
    memory: bool = True,
    log: Callable[[str], None] = print,
    onnx: bool | None = None,
    keep_memory: bool = True,
) -> dict:
    if with_torch is None:
        try:
            import torch  # noqa: F401

            with_torch = True
        except ImportError:
            with_torch = False
    if onnx is None:
        try:
            import onnx as _onnx  # noqa: F401
            import onnxruntime  # noqa: F401

            onnx = True
        except ImportError:
            onnx = False
    # every column (plain, compiled, PyTorch) runs under one allocator: see the docstring
    kept = keep_memory and keep_freed_memory()
    blas = blas_info()
    threads = int(blas["threads"] or 1)
    peak = gemm_peak()
    report = {
        "machine": machine.describe(),
        "blas": blas,
        "threads": threads,
        "scratchcnn": __version__,
        "torch": _torch_version() if with_torch else None,
        "python": platform.python_version(),
        "gemm_peak_gflops": peak,
        "keeps_freed_memory": kept,
        "rows": [],
    }
    allocator = "malloc keeps freed memory" if kept else "malloc as the system set it"
    kernels = blas.get("architecture")
    if blas.get("coretype_set"):
        kernels = f"{kernels}: OPENBLAS_CORETYPE={blas['coretype_set']} chose them"
    log(
        f"{report['machine']['cpu']}, {threads} thread(s), {blas['name']} "
        f"({kernels}), float32 GEMM peak {peak:.1f} GFLOP/s, {allocator}"
    )
    log(
        "training img/s: plain engine, compiled, PyTorch, and the ratios to PyTorch; %peak: the "
        "compiled path's executed FLOP/s over the GEMM rate of the same rounds"
    )
    header = (
        f"{'net':<6} {'batch':>5} | {'plain':>7} {'compiled':>8} {'torch':>7} {'plain/t':>7} "
        f"{'comp/t':>6} {'%peak':>6} | infer: {'plain':>7} {'compiled':>8} {'torch':>7} "
        f"{'comp/t':>6}"
    )
    log(header)

    def cell(row: dict, key: str, width: int, fmt: str = ",.0f") -> str:
        if key not in row:
            return f"{'-':>{width}}"
        value = cut(row[key]) if fmt == ".2f" else row[key]  # a ratio: cut, not rounded
        return f"{value:>{width}{fmt}}"

    for arch in archs:
        model = make_model(arch)
        flops = training_flops(model)
        for batch in batches:
            row = compare(arch, batch, threads, repeats, seconds, with_torch, flops)
            row["flops_executed"] = flops
            row["flops_reference"] = training_flops(model, executed=False)
            row["percent_of_start_peak"] = 100 * row["train_gflops"] / peak
            report["rows"].append(row)
            log(
                f"{arch:<6} {batch:>5} | {cell(row, 'plain_train', 7)} "
                f"{cell(row, 'ours_train', 8)} {cell(row, 'torch_train', 7)} "
                f"{cell(row, 'plain_train_ratio', 7, '.2f')} {cell(row, 'train_ratio', 6, '.2f')} "
                f"{row['percent_of_peak']:>5.1f}% | infer: {cell(row, 'plain_infer', 7)} "
                f"{cell(row, 'ours_infer', 8)} {cell(row, 'torch_infer', 7)} "
                f"{cell(row, 'infer_ratio', 6, '.2f')}"
            )
    log(
        "%peak: the compiled path's training FLOP/s (the FLOPs it executes) over the GEMM rate "
        f"timed in the same rounds (median of rounds); over the {peak:.1f} GFLOP/s timed at the "
        "start: "
        + ", ".join(
            f"{r['arch']} {r['batch']} {r['percent_of_start_peak']:.1f}%" for r in report["rows"]
        )
    )
    if onnx:
        report["inference"] = []
        log(
            "inference img/s, uint8 images to probabilities: scratchcnn (compiled), ONNX Runtime "
            "on scratchcnn's export, ONNX Runtime on PyTorch's export, PyTorch; ratios: "
            "scratchcnn over ONNX Runtime"
        )
        log(
            f"{'net':<6} {'batch':>5} | {'ours':>8} {'ORT':>8} {'ORT(pt)':>8} {'torch':>8} | "
            f"{'ours/ORT':>8} {'ours/ORT(pt)':>12}"
        )
        # The training nets, and the small batch-norm net that the default recipe trains.
        for arch in dict.fromkeys([*archs, "fast"]):
            for batch in (1, 1000):
                row = inference(arch, batch, threads, repeats, seconds, with_torch)
                report["inference"].append(row)
                log(
                    f"{arch:<6} {batch:>5} | {cell(row, 'ours', 8)} {cell(row, 'ort_ours', 8)} "
                    f"{cell(row, 'ort_torch', 8)} {cell(row, 'torch', 8)} | "
                    f"{cell(row, 'ratio_ort', 8, '.2f')} {cell(row, 'ratio_ort_torch', 12, '.2f')}"
                )
    if memory:
        report["memory_keras_256"] = {"ours": peak_memory("keras", 256, "ours", threads, kept)}
        if with_torch:
            report["memory_keras_256"]["torch"] = peak_memory("keras", 256, "torch", threads, kept)
        mem = report["memory_keras_256"]
        ours_mem = mem["ours"]
        line = (
            "peak RSS training keras at batch 256: scratchcnn (on the threads: a child "
            f"process's memory is its own) {ours_mem['peak_mib']:.0f} MiB "
            f"({ours_mem['training_mib']:.0f} MiB for training itself)"
        )
        if with_torch:
            torch_mem = mem["torch"]
            line += (
                f", PyTorch {torch_mem['peak_mib']:.0f} MiB ({torch_mem['training_mib']:.0f} MiB); "
                f"ratio {ours_mem['peak_mib'] / torch_mem['peak_mib']:.2f} "
                f"({ours_mem['training_mib'] / torch_mem['training_mib']:.2f} for training)"
            )
        log(line)
    if epochs:
        report["epoch_seconds"] = {}
        for arch, batch in (("seed", 32), ("keras", 64)):
            secs = epoch_seconds(arch, batch, data_dir)
            report["epoch_seconds"][f"{arch}@{batch}"] = secs
            if secs is not None:
                log(f"one epoch of {arch} (batch {batch}) on the 60,000 MNIST images: {secs:.1f} s")
    return report


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scratchcnn bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        nargs="+",
        default=["seed", "keras", "user"],
        help="nets to time: named architectures, or 'user' (conv 5x5 pad 2, pool, conv 3x3 "
        "pad 1, pool, conv 3x3, dense; default: seed keras user)",
    )
    parser.add_argument(
        "--batch", nargs="+", type=int, default=[64, 128, 256],
        help="training batch sizes (default: 64 128 256)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved timings per figure (default: 5)"
    )
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds per timed repeat (default: 1.0)"
    )
    parser.add_argument(
        "--data-dir", help="where MNIST is, for the epoch timings (default: the cache)"
    )
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    parser.add_argument(
        "--no-epochs", action="store_true", help="skip timing one epoch on all of MNIST"
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip measuring peak memory while training"
    )
    parser.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave malloc as the system set it (default: keep freed memory for reuse in "
        "every column, as `scratchcnn train --plain` does; see scratchcnn.fast.allocator)",
    )
    parser.add_argument(
        "--json", default="bench.json", help="where to write all figures (default: bench.json)"
    )
    args = parser.parse_args(argv)
    report = run(
        tuple(args.arch),
        tuple(args.batch),
        args.repeats,
        args.seconds,
        args.data_dir,
        False if args.no_torch else None,
        not args.no_epochs,
        not args.no_memory,
        onnx=False if args.no_onnx else None,
        keep_memory=not args.system_malloc,
    )
    text = json.dumps(report, indent=1).encode()
    atomic_write(args.json, lambda out: out.write(text))  # a half-written file never lands
    print(f"wrote {args.json}")
    return 0
