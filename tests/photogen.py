"""A deterministic generator of photo-like images of handwritten digits, made from MNIST digits:
what the tests of the photo pipeline read, in CI, without the development set of real photos.

Each picture is paper (white, cream, grey or yellow, with grain) under uneven light (a
gradient, sometimes a hard shadow), sometimes ruled or grid lines, and ink (black, blue or
pencil grey) drawn from an MNIST digit scaled up, its strokes made pencil-thin or marker-thick,
turned a little, placed off-centre; saved as PNG or JPEG. ``number_photo`` lays several digits
in one or two rows; ``on_desk`` puts such a photo's sheet on a darker desk, as a camera sees it;
``on_grid`` writes a number in pen across the lines of squared paper, seen close up.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.morphology import skeletonize

PAPERS = [(250, 250, 248), (245, 238, 215), (205, 205, 200), (240, 230, 150), (225, 228, 232)]
INKS = [(20, 20, 25), (25, 40, 140), (90, 90, 95), (10, 60, 30)]


def _stroke(digit: np.ndarray, size: int, rng: np.random.Generator, style: str) -> np.ndarray:
    """The digit's ink as alpha in [0, 1], ``size`` pixels high, strokes made thin or thick."""
    scale = size / 28
    big = ndimage.zoom(digit.astype(np.float32) / 255, scale, order=1)
    pen = big > 0.5
    if style == "thin":  # a pencil or a ballpoint: about 1.5% of the digit's height
        pen = ndimage.binary_erosion(pen, iterations=max(1, int(scale * 0.8)))
        pen |= ndimage.binary_erosion(big > 0.85, iterations=max(0, int(scale * 0.4)))
    elif style == "thick":  # a marker
        pen = ndimage.binary_dilation(pen, iterations=max(1, int(scale * 0.6)))
    angle = rng.uniform(-10, 10)
    alpha = ndimage.rotate(pen.astype(np.float32), angle, reshape=True, order=1)
    return ndimage.gaussian_filter(np.clip(alpha, 0, 1), sigma=max(0.5, scale / 8))


def _paper(h: int, w: int, rng: np.random.Generator, lines: str, shadow: bool) -> np.ndarray:
    paper = np.ones((h, w, 3), np.float32) * np.array(PAPERS[rng.integers(len(PAPERS))]) / 255
    paper *= 1 + rng.normal(0, 0.02, (h, w, 1)).astype(np.float32)  # grain
    if lines != "none":  # "ruled" and "grid": light blue; "dark": grey, as dark as pencil
        step = int(rng.integers(24, 40))
        colour, share = ([0.3] * 3, 0.85) if lines == "dark" else ([0.55, 0.65, 0.85], 0.6)
        colour = np.array(colour, np.float32)
        rows = np.arange(h) % step == step // 2
        paper[rows] = paper[rows] * (1 - share) + colour * share
        if lines == "grid":
            cols = np.arange(w) % step == step // 2
            paper[:, cols] = paper[:, cols] * (1 - share) + colour * share
    # light: a gradient across the page, sometimes a hard-edged shadow over part of it
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    light = 1 - rng.uniform(0.1, 0.45) * ramp
    if shadow:
        edge = rng.uniform(0.55, 0.8) * h
        light = light * np.where(yy + 0.2 * (xx - w / 2) > edge, 0.55, 1.0)
    return paper * light[..., None]


def _encode(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    image = Image.fromarray(np.uint8(np.clip(rgb, 0, 1) * 255))
    out = io.BytesIO()
    if rng.random() < 0.5:
        image.save(out, format="JPEG", quality=int(rng.integers(60, 92)))
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def digit_photo(digit: np.ndarray, seed: int) -> bytes:
    """One MNIST digit (uint8 28x28) as a photo of paper: PNG or JPEG bytes."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(220, 520)), int(rng.integers(220, 520))
    size = int(min(h, w) * rng.uniform(0.35, 0.7))
    style = ["thin", "normal", "thick"][int(rng.integers(3))]
    lines = ["none", "none", "ruled", "grid"][int(rng.integers(4))]
    paper = _paper(h, w, rng, lines, shadow=rng.random() < 0.25)
    alpha = _stroke(digit, size, rng, style)
    ah, aw = alpha.shape
    top = int(np.clip((h - ah) / 2 + rng.uniform(-0.15, 0.15) * h, 0, h - ah))
    left = int(np.clip((w - aw) / 2 + rng.uniform(-0.15, 0.15) * w, 0, w - aw))
    ink = np.array(INKS[int(rng.integers(len(INKS)))], np.float32) / 255
    region = paper[top : top + ah, left : left + aw]
    region[...] = region * (1 - alpha[..., None]) + ink * alpha[..., None] * region.mean()
    return _encode(paper, rng)


def number_photo(
    digits: list[list[np.ndarray]], seed: int, lines: str | None = None, turn: float = 0.0
) -> bytes:
    """Rows of MNIST digits as a photo of a handwritten number: PNG or JPEG bytes. ``lines``
    ("none", "ruled" or "dark") overrides the seed's choice; ``turn`` (degrees) turns the sheet
    under the camera, its lines and the digits with it, and the paper still fills the frame."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(40, 90))
    style = ["thin", "normal", "thick"][int(rng.integers(3))]
    rows = [[_stroke(d, size, rng, style) for d in row] for row in digits]
    gap = int(size * rng.uniform(0.25, 0.5))
    width = max(sum(a.shape[1] for a in row) + gap * (len(row) - 1) for row in rows)
    h = int(len(rows) * size * 1.8 + size)
    w = int(width + 2 * size)
    chosen = ["none", "ruled"][int(rng.integers(2))]
    # paper beyond the frame on every side, for the corners a turn brings into it
    m = int(np.ceil(max(h, w) * np.sin(np.radians(abs(turn))))) + 2 if turn else 0
    paper = _paper(h + 2 * m, w + 2 * m, rng, lines or chosen, shadow=False)
    ink = np.array(INKS[int(rng.integers(len(INKS)))], np.float32) / 255
    y = size // 2
    for row in rows:
        x = size
        for alpha in row:
            ah, aw = alpha.shape
            top = int(np.clip(y + rng.integers(-size // 10, size // 10 + 1), 0, h - ah)) + m
            region = paper[top : top + ah, x + m : x + m + aw]
            region[...] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
            x += aw + gap
        y += int(size * 1.8)
    if turn:
        paper = ndimage.rotate(paper, turn, axes=(1, 0), reshape=False, order=1)[m:-m, m:-m]
    return _encode(paper, rng)


DESKS = [(70, 70, 75), (110, 80, 55), (40, 40, 40), (130, 130, 125)]  # grey, wood, black, concrete


def on_desk(photo: bytes, seed: int) -> bytes:
    """The sheet of ``photo`` lying turned a little on a darker desk that fills the rest of
    the camera's frame: JPEG bytes."""
    rng = np.random.default_rng(seed)
    paper = Image.open(io.BytesIO(photo)).convert("RGB")
    angle = rng.uniform(-8, 8)
    sheet = paper.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    cover = Image.new("L", paper.size, 255).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    share = rng.uniform(0.55, 0.8)  # of the frame's width and height the sheet takes
    w, h = int(sheet.width / share), int(sheet.height / share)
    desk = np.ones((h, w, 3), np.float32) * np.array(DESKS[rng.integers(len(DESKS))]) / 255
    desk *= 1 + rng.normal(0, 0.03, (h, w, 1)).astype(np.float32)  # grain
    frame = Image.fromarray(np.uint8(np.clip(desk, 0, 1) * 255))
    left = int(rng.integers(0, w - sheet.width + 1))
    top = int(rng.integers(0, h - sheet.height + 1))
    frame.paste(sheet, (left, top), cover)
    out = io.BytesIO()  # a camera's JPEG (a PNG of a grainy desk is slow to write)
    frame.save(out, format="JPEG", quality=int(rng.integers(70, 93)))
    return out.getvalue()


def on_grid(digits: list[np.ndarray], seed: int, line: int, below: str = "paper") -> bytes:
    """A row of ``digits`` written in pen (strokes 5 pixels wide, as dark as 0.15 on paper of
    0.9) on squared paper (lines ``line`` pixels wide, 160 apart, taking 30% of the light), as a
    PNG 1000x800: each digit straddles a level line and has an upright one through it. What
    lies under the bottom 22% of the frame: more ``"paper"``, a ``"desk"`` with level wood
    grain (the sheet ends there, its grid a little before), or a ``"shadow"`` (a phone's, 45%
    of the light, blotched like a camera's noise in the dark)."""
    rng = np.random.default_rng(seed)
    h, w, step = 800, 1000, 160
    grey = np.full((h, w), 0.9, np.float32) * (1 + rng.normal(0, 0.02, (h, w)).astype(np.float32))
    x0, y0 = int(rng.integers(0, 100)), int(rng.integers(0, step))  # five digits fit across
    for x in range(x0, w, step):
        grey[:, x : x + line] *= 0.7
    for y in range(y0, h, step):
        grey[y : y + line] *= 0.7
    y = y0 + step - 50
    for k, digit in enumerate(digits):
        big = ndimage.zoom(digit.astype(np.float32) / 255, 100 / 28, order=1)
        pen = ndimage.binary_dilation(skeletonize(big > 0.5), iterations=2).astype(np.float32)
        alpha = ndimage.gaussian_filter(pen, 0.7)
        x = x0 + step * (k + 1) - int(rng.integers(20, 80))
        region = grey[y : y + alpha.shape[0], x : x + alpha.shape[1]]
        region[...] = region * (1 - alpha) + 0.15 * alpha
    d = int(0.22 * h)
    if below == "desk":  # the sheet's last 60 pixels are a margin with no grid on it
        grey[-d - 60 : -d] = 0.9 * (1 + rng.normal(0, 0.02, (60, w)))
        wood = 0.3 + 0.1 * np.sin(np.arange(d) / 2 + rng.uniform(0, 6))[:, None]
        grey[-d:] = wood * (1 + rng.normal(0, 0.03, (d, w)))
    elif below == "shadow":
        blotches = ndimage.gaussian_filter(rng.normal(0, 1, (d, w)), 2.5)
        grey[-d:] *= 0.45 * (1 + 0.04 * blotches / blotches.std())
    out = io.BytesIO()
    Image.fromarray(np.uint8(np.clip(grey, 0, 1) * 255)).save(out, format="PNG")
    return out.getvalue()
