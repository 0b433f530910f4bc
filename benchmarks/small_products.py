"""A convolution's products whole against in pieces for OpenBLAS's small-matrix kernels
(``scratchcnn.fast.products``), for the convolutions of the bench's nets.

    python benchmarks/small_products.py [--images 64] [--rounds 9]

For each conv of each net, on a part of ``--images`` images: its forward product (patches
(M, K) times the weight (K, F)), its weight gradient (P^T G) and its input gradient (G times
each kernel offset's (F, C) matrix), each timed as NumPy's one product and as
``products.matmul`` / ``products.weight_grad`` cut it, with BLAS on one thread (as in each part
of a split batch, where the engine cuts them) and on all of its threads (where it does not).
Medians of ``--rounds`` interleaved rounds, microseconds. Writes
benchmarks/results/small-products.txt.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from products_floor import fused_layers
from scratchcnn import Conv2D
from scratchcnn.app.bench import blas_info, cut, fastest_call, make_model
from scratchcnn.app.machine import cpu_model
from scratchcnn.fast import products

OUT = Path(__file__).resolve().parent / "results" / "small-products.txt"
NETS = ("seed", "keras", "fast", "user")
CALLS = 5  # each timing: the fastest of this many calls, after one untimed


def conv_products(conv: Conv2D, shape: tuple[int, ...], pool: tuple[int, int], images: int):
    """(name, whole, pieces) for the three products of ``conv`` over ``images`` images: the
    rows its fused pool reads, as the engine makes them."""
    rng = np.random.default_rng(0)
    oh, ow, f = conv.output_shape(shape)
    m = images * (oh // pool[0] * pool[0]) * (ow // pool[1] * pool[1])
    kh, kw = conv.kernel_size
    k, c = kh * kw * conv.in_channels, conv.in_channels
    patches, weight = rng.random((m, k), np.float32), rng.random((k, f), np.float32)
    grad, offsets = rng.random((m, f), np.float32), rng.random((kh * kw, f, c), np.float32)
    out, slabs = np.empty((m, f), np.float32), np.empty((kh * kw, m, c), np.float32)
    return [
        (
            f"{m}x{k}x{f}",
            lambda: np.matmul(patches, weight, out=out),
            lambda: products.matmul(patches, weight, out, True),
        ),
        ("dW", lambda: patches.T @ grad, lambda: products.weight_grad(patches, grad, True)),
        (
            "dX",
            lambda: np.matmul(grad, offsets, out=slabs),
            lambda: products.matmul(grad, offsets, slabs, True),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="images in a part (default 64)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    args = parser.parse_args()
    info = blas_info()
    lines = [
        f"{cpu_model()}, {info['name']}; products of each conv over a part of {args.images} "
        f"images, microseconds, medians of {args.rounds} interleaved rounds (each the best of "
        f"{CALLS} calls); whole: NumPy's one product; pieces: cut into pieces of at most "
        f"{products.SMALL_PRODUCT:,} multiply-adds (scratchcnn.fast.products)",
        f"{'net':<6} {'conv':<26} {'product':<13} | {'1 thread':>8} {'pieces':>8} {'gain':>5} | "
        f"{'2 threads':>9} {'pieces':>8} {'gain':>5}",
    ]
    print("\n".join(lines), flush=True)
    for arch in NETS:
        model = make_model(arch)
        for layer, shape, pool in fused_layers(model):
            if not isinstance(layer, Conv2D):
                continue
            for name, whole, pieces in conv_products(layer, shape, pool, args.images):
                if name == "dX" and layer is model.layers[0]:
                    continue  # the first layer has no input gradient
                times: dict[str, list[float]] = {key: [] for key in ("1w", "1p", "2w", "2p")}
                for _ in range(args.rounds):
                    with threadpool_limits(1, "blas"):
                        times["1w"].append(fastest_call(whole, CALLS))
                        times["1p"].append(fastest_call(pieces, CALLS))
                    times["2w"].append(fastest_call(whole, CALLS))
                    times["2p"].append(fastest_call(pieces, CALLS))
                t = {key: statistics.median(values) * 1e6 for key, values in times.items()}
                lines.append(
                    f"{arch:<6} {layer!r:<26} {name:<13} | {t['1w']:8.1f} {t['1p']:8.1f} "
                    f"{cut(t['1w'] / t['1p']):5.2f} | {t['2w']:9.1f} {t['2p']:8.1f} "
                    f"{cut(t['2w'] / t['2p']):5.2f}"
                )
                print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
