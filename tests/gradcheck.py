"""Central-difference gradients and the relative error used by the gradient tests.

Why these tolerances: in float64 a central difference with step h has truncation error
O(h^2 * f''') and rounding error O(eps * |f| / h); with h = 1e-6 and values of order 1 both stay
below ~1e-8 relative, so a correct analytic gradient agrees to better than 1e-6 while any real
mistake (a missed term, a transposed kernel, a wrong stride) is off by O(1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NUMERIC_TOL = 1e-6  # float64 analytic vs central difference (see above)
TORCH_TOL_64 = 1e-10  # float64 vs PyTorch: same math, different summation order
TORCH_TOL_32 = 1e-4  # float32 vs PyTorch: ~1e-7 per op, accumulated over K-long dot products


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(max |a|, max |b|): scale-free, and 0 only when they agree."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def numerical_gradient(f: Callable[[], float], array: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """dL/d(array) by central differences; ``f`` reads ``array`` (perturbed in place)."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def well_separated(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float64 values with pairwise gaps >= 1e-3 and none near 0, so a 1e-6 step never flips
    a max-pool winner or a ReLU gate (the only non-smooth points of these layers)."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) - n / 2 + 0.5) * (4.0 / n)
    return values.reshape(shape).astype(np.float64)
