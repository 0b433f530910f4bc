"""Data augmentation in NumPy: one random affine warp per image, for the whole batch at once.

Each image gets its own rotation r, scale s and shift (ty, tx). For every output pixel p
(coordinates relative to the image centre c) we sample the input at

    q = R(-r) (p - t) / s + c

with bilinear interpolation; samples falling outside the image read the background (the
batch's minimum, which is the normalised value of a blank pixel). All B*H*W coordinates are
computed as arrays and gathered in one indexing operation: no Python loop over images.
"""

from __future__ import annotations

import numpy as np


def random_affine(
    x: np.ndarray,
    rng: np.random.Generator,
    max_shift: float = 2.0,
    max_rotation: float = 10.0,
    max_scale: float = 0.1,
) -> np.ndarray:
    """Warp a batch (B, H, W, C) by random small rotations (degrees), scalings and shifts."""
    b, h, w, c = x.shape
    dtype = x.dtype
    angle = np.deg2rad(rng.uniform(-max_rotation, max_rotation, b)).astype(dtype)
    scale = rng.uniform(1 - max_scale, 1 + max_scale, b).astype(dtype)
    shift = rng.uniform(-max_shift, max_shift, (b, 2)).astype(dtype)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cy, cx = (h - 1) / 2, (w - 1) / 2
    py = (np.arange(h, dtype=dtype) - cy)[None, :, None] - shift[:, 0, None, None]  # (B, H, 1)
    px = (np.arange(w, dtype=dtype) - cx)[None, None, :] - shift[:, 1, None, None]  # (B, 1, W)
    cos, sin = cos[:, None, None], sin[:, None, None]
    sy = cos * py - sin * px + cy  # (B, H, W) source rows
    sx = sin * py + cos * px + cx  # (B, H, W) source columns
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)

    background = x.min()
    # Pad by one pixel of background on every side so that every neighbour index is valid.
    padded = np.full((b, h + 2, w + 2, c), background, dtype=dtype)
    padded[:, 1:-1, 1:-1] = x
    pixels = padded.reshape(-1, c)  # every padded pixel of the batch, one row each
    first = (np.arange(b) * (h + 2) * (w + 2))[:, None, None]  # each image's first row
    above = np.clip(y0 + 1, 0, h + 1) * (w + 2) + first  # padded row of y0, as an offset
    below = np.clip(y0 + 2, 0, h + 1) * (w + 2) + first
    left, right = np.clip(x0 + 1, 0, w + 1), np.clip(x0 + 2, 0, w + 1)

    def gather(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.take(pixels, (rows + cols).ravel(), axis=0).reshape(b, h, w, c)

    top = gather(above, left) * (1 - fx) + gather(above, right) * fx
    bottom = gather(below, left) * (1 - fx) + gather(below, right) * fx
    return (top * (1 - fy) + bottom * fy).astype(dtype, copy=False)
