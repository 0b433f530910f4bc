"""Data augmentation: random changes to each training batch, a whole batch at a time.

Every function takes a normalised batch x (B, H, W, C) and a generator and returns a new
batch; none loops over images in Python. The background of a batch is its minimum (the
normalised value of a blank pixel). ``POLICIES`` names the combinations the recipes use:

* ``affine``  digits: a random rotation, scaling and shift of each image
* ``photo``   digits as photos show them: thicker and thinner strokes, elastic distortion,
              the affine warp, blur and weaker contrast (see docs and the photo recipe)
* ``mirror``  Fashion-MNIST: left-right flips and shifts of a few pixels (no rotations: a
              rotated shirt is not a common photo)
* ``clothes`` ``mirror`` and random erasing

random_affine: each image gets its own rotation r, scale s and shift (ty, tx). For every output
pixel p (coordinates relative to the image centre c) it samples the input at

    q = R(-r) (p - t) / s + c

with bilinear interpolation; samples falling outside the image read the background. The
coordinates of a few images at a time are computed as arrays and gathered in one indexing
operation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

# Pixel values in one chunk of ``random_affine`` (64 KiB of float32): its temporaries then stay
# small enough for the C allocator to hand the same memory back chunk after chunk, where arrays
# the size of a whole batch were fresh pages from the system on each call, a page fault per
# 4 KiB (benchmarks/results/augmented-training-revisions.txt times the difference).
CHUNK_VALUES = 16384


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
    background = x.min()
    out = np.empty_like(x)
    step = max(1, CHUNK_VALUES // (h * w * c))
    for i in range(0, b, step):
        part = slice(i, i + step)
        out[part] = _warp(x[part], cos[part], sin[part], shift[part], background)
    return out


def _warp(
    x: np.ndarray, cos: np.ndarray, sin: np.ndarray, shift: np.ndarray, background: np.ndarray
) -> np.ndarray:
    """``random_affine``'s warp of x (B, H, W, C) by each image's cos/scale, sin/scale (B,)
    and shift (B, 2), reading ``background`` outside the image."""
    b, h, w, c = x.shape
    dtype = x.dtype
    cy, cx = (h - 1) / 2, (w - 1) / 2
    py = (np.arange(h, dtype=dtype) - cy)[None, :, None] - shift[:, 0, None, None]  # (B, H, 1)
    px = (np.arange(w, dtype=dtype) - cx)[None, None, :] - shift[:, 1, None, None]  # (B, 1, W)
    cos, sin = cos[:, None, None], sin[:, None, None]
    sy = cos * py - sin * px + cy  # (B, H, W) source rows
    sx = sin * py + cos * px + cx  # (B, H, W) source columns
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]

    # Pad by one pixel of background on every side so that every neighbour index is valid.
    padded = np.full((b, h + 2, w + 2, c), background, dtype=dtype)
    padded[:, 1:-1, 1:-1] = x
    pixels = padded.reshape(-1, c)  # every padded pixel of the batch, one row each
    # The neighbours' padded rows and columns are clipped while still floats (whole numbers,
    # exact) and then made int32, whose passes NumPy runs faster than int64's.
    index = np.int32 if len(pixels) < 2**31 else np.intp
    first = (np.arange(b, dtype=index) * (h + 2) * (w + 2))[:, None, None]  # image's first row

    def clipped(coords: np.ndarray, step: int, last: int) -> np.ndarray:
        return np.clip(coords + step, 0, last).astype(index)

    above = clipped(y0, 1, h + 1) * (w + 2) + first  # padded row of y0, as an offset
    below = clipped(y0, 2, h + 1) * (w + 2) + first
    left, right = clipped(x0, 1, w + 1), clipped(x0, 2, w + 1)

    def gather(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.take(pixels, (rows + cols).ravel(), axis=0).reshape(b, h, w, c)

    top = gather(above, left) * (1 - fx) + gather(above, right) * fx
    bottom = gather(below, left) * (1 - fx) + gather(below, right) * fx
    return top * (1 - fy) + bottom * fy


def stroke_width(
    x: np.ndarray, rng: np.random.Generator, thicker: float = 0.3, thinner: float = 0.15
) -> np.ndarray:
    """Thicker strokes (a 3x3 grey dilation) for a fraction ``thicker`` of the images, thinner
    ones (erosion) for ``thinner``: pens and photos differ from MNIST's pen most in stroke
    width."""
    choice = rng.random(len(x))
    out = x.copy()
    thick, thin = choice < thicker, (choice >= thicker) & (choice < thicker + thinner)
    if thick.any():
        out[thick] = ndimage.grey_dilation(x[thick], size=(1, 3, 3, 1))
    if thin.any():
        # a cross-shaped erosion, kept only where the digit keeps at least half of its ink:
        # strokes already one or two pixels wide would vanish
        cross = ndimage.generate_binary_structure(2, 1)[None, :, :, None]
        eroded = ndimage.grey_erosion(x[thin], footprint=cross)
        background = x.min()
        kept = (eroded - background).sum(axis=(1, 2, 3)) / (x[thin] - background).sum(
            axis=(1, 2, 3)
        )
        out[thin] = np.where((kept >= 0.5)[:, None, None, None], eroded, x[thin])
    return out


def elastic(
    x: np.ndarray, rng: np.random.Generator, alpha: float = 8.0, sigma: float = 3.0
) -> np.ndarray:
    """Elastic distortion (Simard et al. 2003): every pixel moves along a random displacement
    field smoothed by a Gaussian of ``sigma`` pixels and scaled to ``alpha`` pixels."""
    b, h, w, c = x.shape
    field = rng.uniform(-1, 1, (2, b, h, w)).astype(np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, 0, sigma, sigma)) * alpha
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [
        np.broadcast_to(np.arange(b)[:, None, None], (b, h, w)),
        rows + field[0],
        cols + field[1],
    ]
    background = float(x.min())
    out = np.empty_like(x)
    for channel in range(c):
        out[..., channel] = ndimage.map_coordinates(
            x[..., channel], coords, order=1, mode="constant", cval=background
        )
    return out


def blur(x: np.ndarray, rng: np.random.Generator, p: float = 0.2) -> np.ndarray:
    """A Gaussian blur of 0.5 or 0.8 pixel for a fraction p of the images (focus, scans)."""
    out = x.copy()
    choice = rng.random(len(x))
    for sigma, chosen in ((0.5, choice < p / 2), (0.8, (choice >= p / 2) & (choice < p))):
        if chosen.any():
            out[chosen] = ndimage.gaussian_filter(x[chosen], sigma=(0, sigma, sigma, 0))
    return out


def contrast(x: np.ndarray, rng: np.random.Generator, low: float = 0.7) -> np.ndarray:
    """Weaker ink: each image's contrast over its background scaled by a factor in [low, 1]."""
    background = x.min()
    factor = rng.uniform(low, 1.0, (len(x), 1, 1, 1)).astype(x.dtype)
    return background + (x - background) * factor


def flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half of the images mirrored left to right."""
    out = x.copy()
    chosen = rng.random(len(x)) < 0.5
    out[chosen] = x[chosen, :, ::-1]
    return out


def random_erasing(
    x: np.ndarray, rng: np.random.Generator, p: float = 0.5, area: tuple = (0.02, 0.25)
) -> np.ndarray:
    """Random erasing (Zhong et al. 2017): for a fraction p of the images, a rectangle of
    ``area`` of the image (aspect 1/3 to 3) is set to the background."""
    b, h, w, _ = x.shape
    size = rng.uniform(*area, b) * h * w
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), b))
    eh = np.clip(np.sqrt(size * aspect), 1, h).astype(int)
    ew = np.clip(np.sqrt(size / aspect), 1, w).astype(int)
    top = (rng.random(b) * (h - eh + 1)).astype(int)
    left = (rng.random(b) * (w - ew + 1)).astype(int)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
        & (rng.random(b) < p)[:, None, None]
    )
    return np.where(inside[..., None], x.min(), x)


def affine(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return random_affine(x, rng)


def photo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = elastic(stroke_width(x, rng), rng)
    return contrast(blur(random_affine(x, rng, max_rotation=12.0, max_scale=0.15), rng), rng)


def mirror(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return random_affine(flip(x, rng), rng, max_shift=2.0, max_rotation=0.0, max_scale=0.0)


def clothes(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return random_erasing(mirror(x, rng), rng)


POLICIES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray] | None] = {
    "none": None,
    "affine": affine,
    "photo": photo,
    "clothes": clothes,
    "mirror": mirror,
}
