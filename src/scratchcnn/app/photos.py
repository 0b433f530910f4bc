"""Turn a real photo or scan of a digit into an MNIST-like 28x28 image.

MNIST digits are white ink on black, anti-aliased, fitted into a 20x20 box that keeps the
aspect ratio, and placed in a 28x28 frame so that their centre of mass is at the centre. We do
the same to any image:

1. read it (PNG, JPEG, ...; EXIF rotation applied; transparency laid on white), make it grey;
2. invert it when the background is light (ink must be the bright part);
3. subtract the background level and stretch the ink to [0, 1], dropping faint noise;
4. crop to the ink's bounding box, scale the longer side to 20 pixels;
5. paste into 28x28 so that the centre of mass lands on the centre.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

MIN_SIDE = 8
MAX_PIXELS = 40_000_000  # a bigger "image" is a decompression bomb, not a digit
WORK_SIDE = 1024  # larger photos are shrunk first: a digit needs far fewer pixels than that


def read_grey(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (path or bytes) as grey float32 in [0, 1], shape (H, W)."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{label}: empty image data")
        stream: io.BytesIO | str | Path = io.BytesIO(source)
    else:
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{label}: is a folder, not an image file")
        if not path.is_file():
            raise ImageError(f"{label}: no such image file")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: empty file, not an image")
        stream = path
    try:
        with Image.open(stream) as img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{label}: image too large ({img.width}x{img.height})")
            img.load()
            img = ImageOps.exif_transpose(img)
            original = img.size
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            if min(img.size) >= MIN_SIDE:  # keep tiny images tiny, so they are refused below
                img.thumbnail((WORK_SIDE, WORK_SIDE))
            grey = np.asarray(img.convert("L"), dtype=np.float32) * np.float32(1 / 255)
    except ImageError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as err:
        raise ImageError(f"{label}: not a readable image file ({err})") from None
    if min(grey.shape) < MIN_SIDE:
        size = "x".join(map(str, original))  # as the file has it, not as shrunk here
        if min(original) < MIN_SIDE:
            raise ImageError(
                f"{label}: image is {size} pixels; a digit needs at least {MIN_SIDE}x{MIN_SIDE}"
            )
        raise ImageError(f"{label}: image is {size} pixels, too thin to hold a digit")
    return grey


def to_mnist(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Grey (H, W) in [0, 1] -> uint8 (28, 28), white digit on black, MNIST-style."""
    grey = np.asarray(grey, dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = np.float32(np.median(border))
    # Ink is what differs from the background, bright: (1 - grey) - (1 - background) on light
    # paper, grey - background on a dark board.
    ink = background - grey if background > 0.5 else grey - background
    peak = float(ink.max())
    if peak < 0.15:  # nothing stands out from the background
        raise ImageError(f"{name}: no digit found (the image is blank or has no contrast)")
    # Below a fifth of the strongest ink is paper texture and JPEG noise, not ink.
    threshold = np.float32(0.2 * peak)
    inked = ink >= threshold
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    crop = np.where(crop >= threshold, crop / np.float32(peak), np.float32(0))
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fitted = Image.fromarray(np.uint8(np.rint(crop * 255))).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(fitted, dtype=np.float64)

    # Place by bounding box first, then move the centre of mass onto the centre.
    canvas = np.zeros((28, 28))
    top, left = (28 - digit.shape[0]) // 2, (28 - digit.shape[1]) // 2
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    total = canvas.sum()
    if total > 0:
        ys, xs = np.indices(canvas.shape)
        dy = int(round(13.5 - (ys * canvas).sum() / total))
        dx = int(round(13.5 - (xs * canvas).sum() / total))
        dy = int(np.clip(dy, -top, 28 - top - digit.shape[0]))
        dx = int(np.clip(dx, -left, 28 - left - digit.shape[1]))
        canvas = np.roll(canvas, (dy, dx), axis=(0, 1))
    return np.uint8(np.clip(np.rint(canvas), 0, 255))


def load_digit(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read an image and preprocess it: uint8 (28, 28), ready for ``Classifier.predict``."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    return to_mnist(read_grey(source, label), label)
