"""From a photo or drawing to the 28x28 images an MNIST network reads.

MNIST digits are white ink on black, anti-aliased, with strokes about 2-3 pixels wide, fitted
into a 20x20 box that keeps the aspect ratio and placed in 28x28 so that their centre of mass
is at the centre. Real photos differ: uneven light and shadows, grey or coloured paper, ruled
and grid lines, thin pens and fat markers, several digits. The pipeline, step by step:

1. ``read_image``: any image file (PNG, JPEG, ...; every mode converted by scaling: 16-bit,
   palette, CMYK, alpha laid on a background that contrasts with the ink), EXIF rotation
   applied, shrunk to at most ``WORK_SIDE`` pixels *before* any full-size copy is made
   (JPEGs are decoded at reduced scale), as grey values in [0, 1]; or a page of a PDF (the
   first, or any: ``page_count``), rendered by pypdfium2 at that size whatever size it claims.
2. ``ink_map``: which way round the ink is (dark on light, or light on dark: whichever stands
   out more as a ratio of light, which a shadow does not change); the paper's own
   brightness estimated at a large scale (a grey closing, smoothed, but kept sharp along a
   hard shadow's edge) and divided out, which flattens shadows and gradients (a noisy
   picture is smoothed first); the ink strength thresholded (Otsu, within bounds: half the
   darkest ink's strength is ink), with fainter ink joined to what passes (hysteresis); ruled
   and grid lines (looked for down to that fainter level) - runs across most of the sheet or
   image, level or, on a sheet photographed askew, at the slant a Hough transform finds -
   removed, the threshold set again without them, and kept where a stroke crosses one or,
   darker than the line, runs along it. A sheet
   of paper held up to a camera or lying on a darker, bare desk (``paper_sheet``) has the
   desk painted over with the paper's nearest brightness first, so that the sheet's edge is
   not read as ink; a part of the sheet under a hard shadow is brightened to the rest first
   (``_relit``), so that the shadow's edge does not go on across the painted desk. So is the
   shadowed part of paper that fills the picture, a hard shadow across it (``_shadow_across``):
   its shadow's edge is no ink, and its dim ink is no bare desk to paint over.
3. ``ink_components``: connected components of the ink, without specks, and without long thin
   shapes or shapes along the border that are paper edges, shadow borders or lines (a long
   stroke through another piece's box stays: a 4's stem drawn apart from its bar).
4. ``load_digit`` picks the coherent ink nearest the centre (the component that is large and
   central, with the pieces beside it: a broken 5 or 4); ``find_digits`` finds every digit of
   a number: pieces merged, what is not sized like a digit dropped (judged against the piece
   that holds the middle of the ink, not the median piece: dust has no say), touching digits
   split, rows top to bottom (but not a row that runs off the picture everywhere, beside
   rows clear of its edge), digits left to right; rows that slope (a sheet photographed
   turned) have their digits turned back upright by the rows' slope, or, with too few
   digits to show one (a digit alone), by the slope of the paper's ruled lines.
5. ``to_mnist``: each digit's strokes brought toward MNIST's width relative to its size
   (dilated or eroded), then MNIST's 20x20 box and centre of mass.

Everything here uses Pillow for files, scipy.ndimage for filters, morphology and labelling, and
scikit-image for the Hough transform and the hysteresis threshold.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.filters import apply_hysteresis_threshold
from skimage.measure import block_reduce
from skimage.transform import hough_line

from ..errors import ImageError
from ..fileio import atomic_write

MIN_SIDE = 8
SPECK = 4  # pixels: ink this small is a speck, never a digit
MAX_PIXELS = 80_000_000  # a bigger "image" is a decompression bomb, not a photo
WORK_SIDE = 1024  # photos are shrunk to this first: a digit needs far fewer pixels
STROKE = 0.13  # MNIST's stroke width over the longest side of its 20x20 box (~2.6 px)
BACKGROUND = 0.12  # the background window, a share of the picture's longer side
# On the real development set, ink covers at most 19% of a picture judged either way; so one
# side over a quarter while the other is under a tenth is the paper, not the ink (``_ink``).
SPREAD = 0.25
# Paper that the smoothed level of the paper around it outshines by this much (grey levels)
# somewhere, in a stretch that reaches the picture's edge, is under a shadow (``_background``).
SHADOW_STEP = 0.05
BLACK = 0.05  # as dark as black gets in a photo (grey level), for ratios of light
# Which way round the ink is (dark on light, light on dark) is judged by ratios of light, which
# a shadow leaves as they are; levels under RATIO_FLOOR count as it: that dark, a photo shows
# its camera's black level and noise more than what lies there (specks of 0.09 on a board of
# 0.29 stood out more than chalk of 0.77 on it, as ratios).
RATIO_FLOOR = 0.15
RATIO_TIE = 0.04  # ratios this close (in log) tell nothing: the border decides
SCRAP = 0.1  # a piece of a number with this share of a typical digit's ink or less is no digit
NEAR = 0.4  # pieces within this share of a digit's size of it are part of it
# A piece whose thickest part (twice its largest distance to the background) is more than
# this share of its height is a filled region (a shadow, the desk, a dark object), not a pen's
# stroke: the development set's single digits reach 0.30 at most, 0.10 at the median.
SOLID = 0.45
DWARF = 10  # a filled region this many times the next piece's ink dwarfs the digits
# The slopes along which a number's rows are looked for (down per pixel right), least steep
# first: up to 20 degrees either way.
ROW_SLOPES = sorted((0.04 * k for k in range(-9, 10)), key=abs)
# A number whose rows (or a digit whose ruled lines) slope this much (degrees) or more was
# photographed turned: its digits are turned back upright before they are read (``_turn``,
# ``Ink.turn``). Less is left alone: MNIST's own writers slant their digits as much, and two
# digits' centres differ by their shapes (level generated numbers measured up to 3.9, by hand).
MIN_TURN = 5.0
RULED = 3  # this many long lines (a grid's level and upright ones apart) are ruled or squared paper
LINE_BRIDGE = 9  # pixels: a ruled line (dilated) is thinner, so a stroke across it is kept
ON_LINE = 0.2  # ink on a printed line is this much stronger than the line, at least
THIN_LINE = 0.02  # a printed line is at most this share of the picture's side thick
# A shadowed part of a sheet is dimmer paper: its edge on the desk a smaller step (``paper_sheet``)
SHADOWED_EDGE = 0.06
FILLS = 0.92  # a sheet's hull over this share of the picture fills it: no desk around it
# Paper that fills the picture, a hard shadow across it (``_shadow_across``): the lit part
# reaches the picture's edge along this share of a side at least, the shadow takes no less
# than DEEPEST of the light (a darker "shadow" is a black desk), and dark writing shows in it:
# its darkest pixels, as many as a hairline digit has, under WRITTEN of its level, its lightest
# under 1 / WRITTEN of it (lighter is light ink, as in a negative).
LIT_EDGE, DEEPEST, WRITTEN = 1 / 3, 0.15, 0.6
SLANT, SLANT_STEP = 12.0, 0.25  # degrees: how far turned ruled lines are looked for, how finely
# Pixel noise (``noise_level``) above which a picture is smoothed before its ink is looked
# for: the real development set's pictures measure 0.0164 at most, as ``read_image`` gives
# them; with noise of 0.08 added (``benchmarks/realdigits_changed.py``) their ink drowned.
# Smoothing brings the noise down to about NOISE / 2, never with a kernel wider than a 200th
# of the picture.
NOISE = 0.03
# The ink threshold: Otsu's split of the ink strengths, kept within these bounds. The ceiling
# matters when the ink has two tones and no paper noise to split off (a grey brush with a dark
# rim drawn on flat white): Otsu then splits the ink itself, and half the peak strength is ink.
INK_THRESHOLD = (0.2, 0.5)
FAINT = 0.7  # ink this share of the threshold is ink too where it joins ink above it


@dataclass
class Picture:
    """An image as the pipeline sees it: ``grey`` (H, W) in [0, 1], the ``size`` the file
    has (width, height), and ``scale`` = grey's size over the file's."""

    grey: np.ndarray
    size: tuple[int, int]
    scale: float
    pages: int = 1  # of the file it was read from: a PDF's page count

    def png(self) -> bytes:
        """The picture as the reader saw it (grey, turned upright by its EXIF), as PNG bytes of
        the file's ``size``: the pixels a reading's boxes are given in."""
        img = Image.fromarray(np.round(self.grey * 255).astype(np.uint8))
        if img.size != self.size:
            img = img.resize(self.size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return buffer.getvalue()


# -- 1. reading ---------------------------------------------------------------------------------


def _open(source: str | Path | bytes, label: str):
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{label}: empty image data")
        return io.BytesIO(source)
    path = Path(source)
    if path.is_dir():
        raise ImageError(f"{label}: is a folder, not an image file")
    if not path.is_file():
        raise ImageError(f"{label}: no such image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{label}: empty file, not an image")
    return path


def is_pdf(data: bytes) -> bool:
    """Whether a file's bytes (its first five are enough) are a PDF's."""
    return data[:5] == b"%PDF-"


def _head(stream: io.BytesIO | Path) -> bytes:
    """The first five bytes of an opened source (``_open``): enough to tell a PDF."""
    if isinstance(stream, Path):
        with stream.open("rb") as file:
            return file.read(5)
    return stream.getvalue()[:5]


def _pdf(stream: io.BytesIO | Path, label: str) -> pdfium.PdfDocument:
    try:
        pdf = pdfium.PdfDocument(stream if isinstance(stream, Path) else stream.getvalue())
    except pdfium.PdfiumError as err:
        raise ImageError(f"{label}: not a readable PDF ({err})") from None
    if len(pdf) == 0:
        pdf.close()
        raise ImageError(f"{label}: a PDF with no pages")
    return pdf


def page_count(source: str | Path | bytes, name: str | None = None) -> int:
    """How many pages a PDF has (a scan of several sheets); 1 for any other image file."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    stream = _open(source, label)
    if not is_pdf(_head(stream)):
        return 1
    pdf = _pdf(stream, label)
    try:
        return len(pdf)
    finally:
        pdf.close()


def _pdf_page(
    stream: io.BytesIO | Path, label: str, index: int = 0
) -> tuple[Image.Image, int] | None:
    """Page ``index`` (from 0) of a PDF (a scan, say), rendered ``WORK_SIDE`` pixels on its
    longer side whatever size the page claims, and the PDF's page count; None when ``stream``
    is not a PDF."""
    if not is_pdf(_head(stream)):
        if index:
            raise ImageError(f"{label}: not a PDF, so it has no page {index + 1}")
        return None
    pdf = _pdf(stream, label)
    try:
        if not 0 <= index < len(pdf):
            raise ImageError(f"{label}: a PDF of {len(pdf)} page(s) has no page {index + 1}")
        page = pdf[index]
        width, height = page.get_size()  # in points
        if not min(width, height) > 0:
            raise ImageError(f"{label}: its page {index + 1} is {width}x{height} points")
        # a copy: the rendered bitmap's memory goes with the document
        return page.render(scale=WORK_SIDE / max(width, height)).to_pil().copy(), len(pdf)
    except pdfium.PdfiumError as err:
        raise ImageError(f"{label}: not a readable PDF ({err})") from None
    finally:
        pdf.close()


def open_image(source: str | Path | bytes, name: str | None = None, page: int = 0) -> Image.Image:
    """The file as Pillow opens it, or page ``page`` (from 0) of a PDF, rendered as
    ``read_image`` renders it: for drawing on (``reader.annotate``)."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    stream = _open(source, label)
    try:
        rendered = _pdf_page(stream, label, page)
        return rendered[0] if rendered else Image.open(stream)
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"{label}: not a readable image file ({err})") from None


def _grey(img: Image.Image) -> Image.Image:
    """Any mode -> a single-channel image ("L", or "F" in [0, 1] for high bit depths), by
    scaling: 16-bit values are divided by 65535, never clipped at 255."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return img.convert("I").point(lambda v: v / 65535, "F")
    if img.mode == "I":
        low, high = img.getextrema()
        return img.point(lambda v: (v - low) / max(high - low, 1), "F")
    if img.mode == "F":
        low, high = img.getextrema()
        return img.point(lambda v: (v - low) / max(high - low, 1e-12), "F")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        ink = np.asarray(rgba.convert("L"), dtype=np.float32) / 255
        drawn = alpha > 0.5
        # Strokes drawn on a transparent canvas: lay them on whatever contrasts with them.
        light_ink = drawn.any() and ink[drawn].mean() > 0.5
        backdrop = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light_ink else (255,) * 4)
        return Image.alpha_composite(backdrop, rgba).convert("L")
    return img.convert("L")  # RGB, CMYK, P, 1, YCbCr, LAB, HSV


def read_image(
    source: str | Path | bytes,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
    page: int = 0,
) -> Picture:
    """Read an image file (a path or its bytes) as grey values in [0, 1]. A picture of more
    than ``max_pixels`` pixels is refused before it is decoded. Of a PDF, page ``page`` (from
    0; ``page_count`` says how many) is read, rendered ``WORK_SIDE`` pixels on its longer side
    (its ``size``)."""
    label = name or (str(source) if not isinstance(source, bytes) else "image")
    stream = _open(source, label)
    rendered = _pdf_page(stream, label, page)
    pages = rendered[1] if rendered else 1
    try:
        with rendered[0] if rendered else Image.open(stream) as img:
            size = img.size
            if size[0] * size[1] > max_pixels:
                raise ImageError(f"{label}: image too large ({size[0]}x{size[1]} pixels)")
            if min(size) < MIN_SIDE:
                raise ImageError(
                    f"{label}: image is {size[0]}x{size[1]} pixels; a digit needs at least "
                    f"{MIN_SIDE}x{MIN_SIDE}"
                )
            # A JPEG decodes straight to 1/2, 1/4 or 1/8 of its size: no full-size copy.
            img.draft("L", (WORK_SIDE, WORK_SIDE))
            decoded = img.size
            img = ImageOps.exif_transpose(img)
            turned = img.size != decoded  # EXIF said: rotated by 90 or 270 degrees
            grey = _grey(img)
            if max(grey.size) > WORK_SIDE:
                grey.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
            values = np.asarray(grey, dtype=np.float32)
            if grey.mode == "L":
                values *= np.float32(1 / 255)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own limit, met before ours
        raise ImageError(f"{label}: image too large ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{label}: not a readable image file ({err})") from None
    if min(values.shape) < MIN_SIDE:
        raise ImageError(f"{label}: image is {size[0]}x{size[1]} pixels, too thin to hold a digit")
    upright = (size[1], size[0]) if turned else size
    return Picture(values, upright, values.shape[1] / upright[0], pages)


# -- 2. ink -------------------------------------------------------------------------------------


def border_median(grey: np.ndarray) -> float:
    """The median of the picture's outermost rows and columns: its background, most often."""
    return float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))


def _light_border(grey: np.ndarray) -> bool:
    """Whether the border (the background, most often) is nearer the brightest pixels than the
    darkest, as ratios: light multiplies, so paper with 45% of the light on it (0.45, its ink
    0.02) is light, as the eye sees it, where the middle grey 0.5 called it dark. Black is
    taken as no darker than BLACK (a camera's black level, a JPEG's noise)."""
    darkest, brightest = _ends(grey)
    return border_median(grey) ** 2 > max(darkest, BLACK) * brightest


def _hairline(values: np.ndarray) -> int:
    """How many pixels a hairline digit has in a picture of ``values``' size (at least 50)."""
    return max(50, values.size // 2000)


def _ends(values: np.ndarray) -> tuple[float, float]:
    """The darkest and lightest levels of ``values``: the medians of the lowest and of the
    highest, as many as a hairline digit has pixels (a quantile of the whole picture would be
    paper when the ink is that thin)."""
    flat, count = values.ravel(), _hairline(values)
    ends = np.partition(flat, (count, flat.size - count))
    return float(np.median(ends[:count])), float(np.median(ends[-count:]))


def _top(values: np.ndarray) -> float:
    """``_ends(values)[1]``, the lightest level, alone (one partition, not two)."""
    flat, count = values.ravel(), _hairline(values)
    return float(np.median(np.partition(flat, flat.size - count)[-count:]))


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (the split with the largest between-class
    variance of a 256-bin histogram)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    if total == 0:
        return 0.5
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centres[int(np.argmax(between))])


def _background(
    values: np.ndarray, size: float, dark_ink: bool, step: int = 0
) -> tuple[np.ndarray, bool]:
    """The paper (or board) without the ink, estimated at the scale of ``size`` pixels: a grey
    closing (dark ink) or opening (light ink), smoothed, of a copy downscaled ``step`` times
    (0: up to 4x, large pictures only) and scaled back up. Where the smoothing would spread
    the lit paper's level into a shadow that reaches the picture's edge (a hard shadow across
    it), the closing (opening) is kept as it is, edge and all: smoothed, that level was a band
    of "ink" along the shadow's edge. A dark patch that the picture's edge does not reach is
    ink too wide for the window (a fat marker's stroke), and keeps the smoothed level that it
    shows against."""
    step = step or _downscale(values.shape)
    small = values[::step, ::step]
    window = max(3, int(size / step) | 1)
    morph = ndimage.grey_closing if dark_ink else ndimage.grey_opening
    paper = morph(small, size=(window, window))
    back = ndimage.uniform_filter(paper, window)
    # A shadow's edge is told from ink only in a picture two windows across both ways: a
    # small picture is all digit. (Not three: a photo cropped to its number, three to four
    # times as wide as high, is two to three windows high, and its shadow's edge was ink.)
    shadowed = min(small.shape) >= 2 * window and bool(_shadow(paper, back, dark_ink).any())
    if shadowed:
        # Closed again, padded with the edge's own values, so that a shadow's edge that meets
        # the picture's edge at a slant goes on beyond it: the closing of the picture as
        # reflected fills the wedge that the reflection makes (its tip narrower than the
        # window) with the lit level. Not always: a stroke along the picture's edge, padded
        # so, would be a band too wide to close.
        paper = _past_edge(morph, small, window)
        back = ndimage.uniform_filter(paper, window)
        back = np.where(_shadow(paper, back, dark_ink), paper, back)
    if step == 1:
        return back, shadowed
    zoom = (values.shape[0] / back.shape[0], values.shape[1] / back.shape[1])
    return ndimage.zoom(back, zoom, order=1)[: values.shape[0], : values.shape[1]], shadowed


def _past_edge(morph: Callable[..., np.ndarray], values: np.ndarray, window: int) -> np.ndarray:
    """``morph`` (a grey closing or opening) of ``values`` by a square ``window``, the picture
    padded with its edge's own values: a shadow's edge that meets the picture's at a slant goes
    on beyond it, where the picture as reflected (``morph``'s own border) makes a wedge, its tip
    narrower than the window, that the closing filled with the lit level."""
    padded = np.pad(values, window, mode="edge")
    return morph(padded, size=(window, window))[window:-window, window:-window]


def _downscale(shape: tuple[int, int]) -> int:
    """How many times ``_background`` downscales a picture: up to 4x, large pictures only."""
    return int(np.clip(min(shape) // 64, 1, 4))


def _shadow(paper: np.ndarray, back: np.ndarray, dark_ink: bool) -> np.ndarray:
    """Where ``back``, the paper's level smoothed, spreads the lit level into a shadow that
    reaches the picture's edge: a stretch where it is brighter (darker, for light ink) than the
    unsmoothed ``paper``, by ``SHADOW_STEP`` somewhere, that touches the edge."""
    spread = back - paper if dark_ink else paper - back
    labels, _ = ndimage.label(spread > 0)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    shadow = np.intersect1d(edge[edge > 0], labels[spread > SHADOW_STEP])
    return np.isin(labels, shadow)


@dataclass
class Ink:
    """The ink of a picture: ``strength`` (H, W) in [0, 1] (1: the darkest ink against its own
    paper) and ``mask``, the pixels that are ink; ``turn``: on ruled or squared paper whose
    lines slope ``MIN_TURN`` degrees or more, the angle (for ``ndimage.rotate``) that levels
    them, and so the digits written on it (else 0)."""

    strength: np.ndarray
    mask: np.ndarray
    light_on_dark: bool
    turn: float = 0.0


@dataclass
class _Polarity:
    strength: np.ndarray  # the ink's contrast with its local background, relative, in [0, 1]
    contrast: float  # the ink's absolute contrast, in grey levels
    cover: float  # the share of the picture at least half that contrast
    ratio: float  # how many times brighter the paper is than the ink (light ink: the reverse)
    shadowed: bool  # whether a hard shadow's edge was kept sharp (``_background``)


def _polarity(grey: np.ndarray, size: float, dark_ink: bool, step: int = 0) -> _Polarity:
    """The ink as it would be if it were darker (or lighter) than its background. Its level is
    the median of the strongest pixels, as many as a hairline digit has: a quantile of the
    whole picture would be paper noise when the ink is that thin."""
    back, shadowed = _background(grey, size, dark_ink, step)
    contrast = np.clip(back - grey if dark_ink else grey - back, 0, 1)
    level = _top(contrast)
    cover = float((contrast > 0.5 * level).mean()) if level > 0 else 1.0
    # Relative to the paper: a shadow darkens paper and ink alike, so divide it out.
    relative = contrast / np.maximum(back if dark_ink else 1 - back, 1e-3)
    seen, lit = np.maximum(grey, RATIO_FLOOR), np.maximum(back, RATIO_FLOOR)
    ratio = _top(np.divide(lit, seen, out=lit) if dark_ink else np.divide(seen, lit, out=seen))
    return _Polarity(np.clip(relative, 0, 1).astype(np.float32), level, cover, ratio, shadowed)


def _sheet_step(shape: tuple[int, int]) -> int:
    """The grid ``paper_sheet`` finds the sheet on: every this many pixels, ~128 a side (the
    sheet's outline needs no more). Its hull is up to one step short of the paper's edge."""
    return max(1, min(shape) // 128)


def paper_sheet(grey: np.ndarray) -> np.ndarray | None:
    """The pixels (H, W) of a sheet of paper that lies on something darker (a desk, a hand,
    the room), or None when there is no such sheet. The sheet is the convex hull of the large
    bright regions (Otsu's threshold; the hull keeps a stroke that cuts the paper in two). It
    counts only when it is clearly inside the picture, solidly bright (ink covers little of a
    sheet; a chalk digit's hull is mostly board) and its edge a sharp step down to what is
    around it (a shadow's edge is mostly a slope). Paper under a hard shadow beside it is part
    of the sheet when the two make one convex shape, itself clearly inside the picture with a
    sharp edge (``_shadowed_part``)."""
    sheet = _find_sheet(grey)
    return None if sheet is None else sheet.mask


@dataclass
class _Sheet:
    """A sheet ``paper_sheet`` found: its pixels ``mask`` (H, W); on ``small``, the grid it
    was found on (every ``step``-th pixel), its ``lit`` part's hull and its ``shadowed`` part
    (all False when there is none)."""

    mask: np.ndarray
    small: np.ndarray
    step: int
    lit: np.ndarray
    shadowed: np.ndarray


def _find_sheet(grey: np.ndarray) -> _Sheet | None:
    step = _sheet_step(grey.shape)
    small = grey[::step, ::step]
    bright = small > _otsu(small)
    labels, count = ndimage.label(bright)
    if count == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    paper = np.isin(labels, 1 + np.flatnonzero(areas >= 0.02 * bright.size))
    lit = _hull(paper)
    if lit is None or lit.mean() > FILLS:  # no sheet, or nothing around it
        return None
    if (bright & lit).sum() < 0.75 * lit.sum() or _edge_step(small, lit, lit) < 0.1:
        return None
    shadowed = _shadowed_part(small, lit)
    # The hull at full size, small's pixel (i, j) the picture's (i * step, j * step), of
    # paper's pixels: a hull drawn on small's grid may cover a pixel past the paper's edge.
    sheet = _hull(paper | shadowed, step, grey.shape)
    if sheet is None or sheet.mean() < 0.2:  # too small
        return None
    return _Sheet(sheet, small, step, lit, shadowed)


def _hull(
    region: np.ndarray, step: int = 1, shape: tuple[int, int] | None = None
) -> np.ndarray | None:
    """The convex hull of a boolean image's True pixels, as a boolean image of ``shape``
    (the region's own by default) whose pixels are ``step`` times finer; None when they are
    too few or all in a line."""
    points = np.argwhere(region)
    try:
        corners = points[ConvexHull(points).vertices] * step
    except (QhullError, ValueError):
        return None
    h, w = shape or region.shape
    outline = Image.new("1", (w, h), 0)  # drawn from (x, y) vertices
    ImageDraw.Draw(outline).polygon([(int(c[1]), int(c[0])) for c in corners], fill=1)
    return np.asarray(outline, bool)


def _edge_step(small: np.ndarray, sheet: np.ndarray, along: np.ndarray) -> float:
    """How sharply ``sheet`` stands out from what is around it where its edge runs next to
    ``along``: the medians of a thin rim just inside and one just outside, their difference
    (0 when there is nothing outside)."""
    rim = 2  # small's pixels, about 1.5% of the picture's side
    near = ndimage.binary_dilation(along, iterations=2 * rim)
    inner = sheet & ~ndimage.binary_erosion(sheet, iterations=rim, border_value=1) & near
    outer = ndimage.binary_dilation(sheet, iterations=rim) & ~sheet & near
    if not inner.any() or not outer.any():
        return 0.0
    return float(np.median(small[inner]) - np.median(small[outer]))


def _shadowed_part(small: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """The paper beside ``lit``, the bright part of a sheet, that lies under a hard shadow
    (a hand's, a phone's); none (all False) when there is no such paper. Without it the sheet
    would end at the shadow's edge, and its shadowed part be taken for desk and its edge for
    ink. That part is a region of what is around ``lit`` (split in two by Otsu's threshold:
    it may be lighter or darker than the desk) that touches it, a tenth of its size at
    least, and makes with it one convex shape clearly inside the picture whose edge is a
    sharp step where it runs along the shadowed part; or, on paper that fills the picture,
    all of what is around ``lit`` (``_shadow_across``)."""
    rest = ~lit
    if rest.sum() < 0.05 * rest.size:
        return np.zeros_like(lit)
    touching = ndimage.binary_dilation(lit, iterations=2) & rest
    across = _shadow_across(small, lit, rest, touching)
    if across is not None:
        return across
    threshold = _otsu(small[rest])
    for side in (small > threshold, small <= threshold):
        labels, _ = ndimage.label(rest & side)
        boxes = ndimage.find_objects(labels)
        for label in np.unique(labels[touching & side]):
            rows, cols = boxes[label - 1]  # not even its box filled would be large enough
            if (rows.stop - rows.start) * (cols.stop - cols.start) < 0.1 * lit.sum():
                continue
            joined = _joined(lit, labels == label)
            if joined is None or joined[1].mean() > FILLS:
                continue
            part, sheet = joined
            if abs(_edge_step(small, sheet, part)) >= SHADOWED_EDGE:  # part lies off lit
                return part
    return np.zeros_like(lit)


def _joined(lit: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A region beside ``lit`` as a shadowed part of its sheet: the region filled (ink in the
    shadow is paper) less its rim, whose pixels may be blurred into the desk (like the lit
    part's hull, the sheet may stop short of the paper's edge, never go past it), and the
    hull it makes with ``lit``; None when that part is under a tenth of ``lit`` or the two
    make no convex shape (under 90% of their hull)."""
    part = ndimage.binary_erosion(ndimage.binary_fill_holes(region))
    if part.sum() < 0.1 * lit.sum():
        return None
    union = lit | part
    sheet = _hull(union)
    if sheet is None or union.sum() < 0.9 * sheet.sum():
        return None
    return part, sheet


def _shadow_across(
    small: np.ndarray, lit: np.ndarray, rest: np.ndarray, touching: np.ndarray
) -> np.ndarray | None:
    """Paper that fills the picture with a hard shadow across it: the region of ``rest`` (what
    is around ``lit``) that touches ``lit`` and makes with it one convex shape as large as the
    picture, less its rim; None when there is none. A sheet on a desk that fills the rest of
    the frame makes that shape too: it is told apart by ``lit`` reaching the picture's edge
    (``LIT_EDGE``; a desk all around leaves it inside) and by the shadow's level and what it
    holds (``_written``). Whole, not split by Otsu's threshold as a shadowed part beside a
    desk is: without a desk to tell it from, the shadow's darker end (light falling off under
    it) is shadow too, and left out it was a dark patch whose edge was read as digits."""
    sides = (lit[0], lit[-1], lit[:, 0], lit[:, -1])
    if max(side.mean() for side in sides) < LIT_EDGE:
        return None
    labels, _ = ndimage.label(rest)
    light = float(np.median(small[lit]))
    for label in np.unique(labels[touching]):
        region = labels == label
        joined = _joined(lit, region)
        if joined is None or joined[1].mean() <= FILLS:
            continue
        # what lies under the shadow, less its rim (which the shadow's blurred edge lightens)
        if _written(small[ndimage.binary_erosion(region, iterations=2)], light):
            return joined[0]
    return None


def _written(values: np.ndarray, light: float) -> bool:
    """Whether ``values`` are paper under a shadow with dark writing on it, beside paper whose
    level is ``light``: at least DEEPEST of its level, its darkest pixels (as many as a
    hairline digit has) under WRITTEN of its own, and its lightest as far over it at most
    (more is light ink: a board beside a bright wall, a negative). A bare desk has no such
    dark pixels; a black one is darker than any shadow."""
    if values.size < 100:
        return False
    shade = float(np.median(values))
    darkest, lightest = _ends(values)
    return shade >= DEEPEST * light and darkest < WRITTEN * shade and lightest * WRITTEN < shade


def _bare_around(grey: np.ndarray, sheet: np.ndarray) -> bool:
    """Whether what lies around ``sheet`` holds nothing darker or lighter than itself: a bare
    desk, not paper under a hard shadow with ink on it, a board with chalk on it beside a
    bright wall, or things on the desk, which are all left as they are. Judged by its darkest
    and lightest pixels, as many as a thin digit has, a few pixels off the sheet's blurred
    edge."""
    rim = 4 * max(2, _sheet_step(grey.shape)) + 1  # the hull is up to a step short
    values = grey[~ndimage.maximum_filter(sheet.view(np.uint8), size=rim).view(bool)]
    if values.size < 100:
        return True
    darkest, lightest = _ends(values)
    middle = np.median(values)
    return float(max(middle - darkest, lightest - middle)) < 0.12


def _painted_around(grey: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """``grey`` with everything off ``sheet`` (and its blurred edge, a few pixels in) painted
    over with the nearest paper's brightness."""
    paper = ndimage.binary_erosion(sheet, iterations=max(2, _sheet_step(grey.shape)))
    nearest = ndimage.distance_transform_edt(~paper, return_distances=False, return_indices=True)
    return grey[tuple(nearest)]


def ink_map(grey: np.ndarray) -> Ink:
    """Find the ink; on a sheet of paper on a darker desk with nothing else on it, the ink
    with the desk painted over as paper (see ``paper_sheet``). A noisy picture is smoothed
    first (``denoised``). Ruled lines are looked for across the sheet (a sheet on a desk with
    things on it, left as it is, has lines that end at its edge), where it spans half the
    picture or more that way (a smaller "sheet" may be the lit part of paper under a hard
    shadow, its lines going on into the shadow)."""
    grey = denoised(grey)
    sheet = _find_sheet(grey)
    if sheet is None:
        return _ink(grey)
    if _bare_around(grey, sheet.mask):
        grey = _painted_around(_relit(grey, sheet), sheet.mask)
    (h, w), rows, cols = grey.shape, sheet.mask.any(axis=1).sum(), sheet.mask.any(axis=0).sum()
    return _ink(grey, (int(rows) if rows >= h / 2 else h, int(cols) if cols >= w / 2 else w))


def noise_level(grey: np.ndarray) -> float:
    """The pixel noise of ``grey``: the spread of the differences between horizontal neighbours
    (their median absolute deviation, as a normal standard deviation, over sqrt(2)). Strokes
    and edges are few of the differences, so they barely move the median. Taken over about
    256 evenly spaced rows: as good an estimate, at a fraction of a large picture's time."""
    diff = np.diff(grey[:: max(1, len(grey) // 256)], axis=1).ravel()
    if diff.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2))


def denoised(grey: np.ndarray) -> np.ndarray:
    """``grey`` smoothed by a Gaussian if its pixel noise is over ``NOISE``, else as it is. A
    Gaussian of width sigma divides independent pixel noise by about 2 sqrt(pi) sigma."""
    noise = noise_level(grey)
    if noise <= NOISE:
        return grey
    sigma = min(noise / (NOISE / 2) / (2 * math.sqrt(math.pi)), max(grey.shape) / 200)
    return ndimage.gaussian_filter(grey, sigma)


def _relit(grey: np.ndarray, sheet: _Sheet) -> np.ndarray:
    """``grey`` with a sheet's shadowed part brightened to the level of the lit paper beside
    it, so that the shadow's edge is no line of ink (across the sheet, or on across the
    painted desk). Pixel by pixel, within reach of the part the grid found, on the sheet: the
    paper's level there is its grey closing at full size (the ink taken out; a straight edge,
    and a shadow's blurred rim, kept where they are, which a closing does not move), and the
    pixel gets as much of the shadow's lift (the ratio of the lit paper's level to the
    shadowed paper's) as that level lies of the way from the lit paper's to the shadowed
    paper's. Ink keeps its ratio to the paper under it; lit paper is left as it is. One
    factor for the whole part, as before, left a line along its edge where the grid's
    blocks cut across it, which was read as digits."""
    shadowed, small, step = sheet.shadowed, sheet.small, sheet.step
    if not shadowed.any():
        return grey
    lit_beside = ndimage.binary_dilation(shadowed, iterations=3) & sheet.lit
    if not lit_beside.any():
        return grey
    # Levels of paper: the upper quartiles, which ink, and a dark object in the shadow (a
    # phone beside the paper, as much as half of it), leave to the paper
    light, shade = _paper_level(small[lit_beside]), _paper_level(small[shadowed])
    if not light > shade > 0:
        return grey
    h, w = grey.shape

    def full_size(mask: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(mask, step, axis=0), step, axis=1)[:h, :w]

    core = full_size(shadowed)
    near = ndimage.maximum_filter(core.view(np.uint8), size=6 * step + 1)
    near = near.view(bool) & sheet.mask
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    window = int(max(15.0, BACKGROUND * max(h, w))) | 1  # wider than a stroke, as in ``_ink``
    paper = _past_edge(ndimage.grey_closing, grey[box], window)  # as in ``_background``
    # How far into the shadow each pixel is, from the lit paper's closed level beside it (0)
    # to the shadowed paper's (1); the lift goes with it, up to the ratio of the two levels.
    # (The closed levels are the paper's upper envelope, which noise of the same size lifts
    # more, as a ratio, in the shadow: their own ratio lifted it too little.)
    lit_level = _paper_level(paper[full_size(lit_beside)[box]])
    shade_level = _paper_level(paper[core[box]])
    if not lit_level > shade_level:
        return grey
    depth = np.clip((lit_level - paper) / (lit_level - shade_level), 0, 1)
    lift = 1 + depth * (light / shade - 1)
    out = grey.copy()
    region, inside = out[box], near[box]
    region[inside] = np.minimum(region[inside] * lift[inside], 1)
    return out


def _paper_level(values: np.ndarray) -> float:
    """The level of paper among ``values``: their upper quartile."""
    return float(np.percentile(values, 75))


def _ink(grey: np.ndarray, extent: tuple[int, int] | None = None) -> Ink:
    """The ink: its polarity, the lighting flattened out, thresholded, lines removed (those
    across 90% of ``extent``, the picture's height and width if not given)."""
    # The background window must be wider than any stroke, a bold marker's included.
    size = max(15.0, BACKGROUND * max(grey.shape))
    dark, light = _polarity(grey, size, True), _polarity(grey, size, False)
    # Ink never covers most of the picture, and stands out more than the gaps between its
    # strokes, as a ratio of light: ink under a shadow over most of the paper has less
    # contrast in grey levels than the lit paper beside the shadow, not less as a ratio. When
    # both stand out as much (a clean drawing), the border shows the background.
    if (dark.cover > 0.4) != (light.cover > 0.4):
        dark_ink = light.cover > 0.4
    elif (dark.cover > SPREAD) != (light.cover > SPREAD) and min(dark.cover, light.cover) < 0.1:
        # One side spreads over a quarter of the picture and the other is sparse: the spread
        # one is paper, e.g. the strips between dark ruled lines, which stand out as "light"
        # against lines as close as the background window is wide.
        dark_ink = light.cover > SPREAD
    elif abs(math.log(dark.ratio / light.ratio)) < RATIO_TIE:
        dark_ink = _light_border(grey)
    else:
        dark_ink = dark.ratio > light.ratio
    ink = dark if dark_ink else light
    if ink.shadowed and _downscale(grey.shape) > 1:
        # Under a hard shadow the ink is measured against the paper at full size, where the
        # shadow's edge is as sharp as in the picture: scaled up from a quarter of the size,
        # a slanting edge left a line of "ink" a pixel or two wide.
        ink = _polarity(grey, size, dark_ink, step=1)
    if ink.contrast < 0.06:
        return Ink(ink.strength, np.zeros(grey.shape, bool), not dark_ink)
    peak = _top(ink.strength)
    strength = np.clip(ink.strength / max(peak, 1e-3), 0, 1)
    mask, threshold = _thresholded(strength, strength > 0.04)
    # Lines are looked for down to the hysteresis floor: a printed line fainter than the
    # threshold but over the floor is ink only where it touches a digit, and such stretches
    # run across no picture (they were read with the digits they touch). Not in a picture
    # still noisy when smoothed (``denoised`` smooths a small one little): there the floor is
    # noise as much as lines, and noise lined up as ruled lines that turned a digit.
    faint = strength > FAINT * threshold if noise_level(grey) <= NOISE else mask
    (level_lines, upright_lines), (level, upright), slant = _ruled_lines(
        faint, extent or faint.shape
    )
    lines = level_lines | upright_lines
    rest = mask & ~lines
    # A tall 1 in a tight crop is no line: lines that are most of the ink stay ink, unless
    # there are several of them (ruled paper, thin digits) and the rest is more than specks,
    # or they cross (squared paper: no digit's strokes are two level and two upright lines).
    share = rest.sum() / max(mask.sum(), 1)
    several = level + upright >= RULED and (share >= 0.1 or min(level, upright) >= 2)
    if several:
        # Ruled or squared paper: its printed lines are no ink to set the threshold by (lines
        # fainter than the ink pulled it down, into the grain of the paper and of a shadow).
        rest = _thresholded(strength, (strength > 0.04) & ~lines)[0] & ~lines
        # A stroke that crosses a printed line keeps the line's pixels between its ink on
        # either side across the line (above and below a level one), not along it: two digits
        # that touch one line stay apart. A stroke drawn along a line is darker than the line.
        level_printed, level_width = _printed(level_lines)
        upright_printed, upright_width = _printed(upright_lines)
        mask = rest | _bridged(rest, level_lines, (0,), level_width)
        mask |= _bridged(rest, upright_lines, (1,), upright_width)
        printed = level_printed | upright_printed
        if printed.any():
            mask |= printed & (strength > _ink_on_lines(strength, printed))
    elif lines.any() and share >= 0.3:
        # One long line, an underline or a paper's edge, if thin: a thick one is a stroke of a
        # digit cropped tight (a marker's 1). A stroke of a thin digit cropped tight (a 3's
        # back) keeps its pixels between ink on either side of them, whichever way.
        printed, width = _printed(lines)
        rest = mask & ~printed
        mask = rest | _bridged(rest, printed, (0, 1), width)
    return Ink(strength, mask, not dark_ink, slant if several and abs(slant) >= MIN_TURN else 0.0)


def _thresholded(strength: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, float]:
    """The ink and its threshold: what passes Otsu's threshold of the strengths ``among``
    (within ``INK_THRESHOLD``), and the fainter ink joined to it, down to ``FAINT`` of the
    threshold (hysteresis: a 4's bar drawn lightly between two firm strokes, a stroke's lighter
    end)."""
    threshold = float(np.clip(_otsu(strength[among]), *INK_THRESHOLD))
    return apply_hysteresis_threshold(strength, FAINT * threshold, threshold), threshold


def _printed(lines: np.ndarray) -> tuple[np.ndarray, float]:
    """The pieces of ``lines`` thin enough to be printed lines, at most ``THIN_LINE`` of the
    picture's longer side thick (a strip of desk along its edge, a marker's stroke in a
    tight crop are thicker), and how thick the thickest of them is (a piece's pixels over its
    length: a line broken where strokes cross it is in pieces)."""
    labels, count = ndimage.label(lines)
    if count == 0:
        return lines, 0.0
    areas = np.bincount(labels.ravel())[1:]
    lengths = np.array(
        [
            max(rows.stop - rows.start, cols.stop - cols.start)
            for rows, cols in ndimage.find_objects(labels)
        ]
    )
    thickness = areas / lengths
    thin = thickness <= THIN_LINE * max(lines.shape)
    return np.concatenate([[False], thin])[labels], float(thickness[thin].max(initial=0))


def _ink_on_lines(strength: np.ndarray, printed: np.ndarray) -> float:
    """How strong ink drawn on ``printed`` lines is at least: halfway from the lines' own
    strength (the upper quartile of their pixels, which hold their blurred rims) to the
    darkest ink, and ``ON_LINE`` above the lines at least: ink no darker than the lines
    cannot be told from them."""
    level = float(np.percentile(strength[printed], 75))
    return max((level + 1) / 2, level + ON_LINE)


def _bridged(
    rest: np.ndarray, lines: np.ndarray, axes: tuple[int, ...], width: float
) -> np.ndarray:
    """The pixels of ``lines`` that lie between ink of ``rest`` on either side of them along
    ``axes`` (0: above and below, 1: left and right): where a stroke crosses a line. The gap
    a line leaves is its ``width``, which in a close-up photo is more than ``LINE_BRIDGE``; a
    pixel to spare on either side."""
    if not lines.any():
        return lines
    span = max(LINE_BRIDGE, math.ceil(width) + 3)
    closed = np.zeros_like(lines)
    for axis in axes:
        across = np.ones((span, 1) if axis == 0 else (1, span), bool)
        closed |= ndimage.binary_closing(rest, across)
    return lines & closed


def _ruled_lines(
    mask: np.ndarray, extent: tuple[int, int]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, int], float]:
    """Ruled lines, grid lines and paper edges in the ink (``_long_lines``) that run across
    90% of ``extent`` (the sheet's height and width, or the picture's), slightly thickened to
    take their blur, the level and the upright ones apart, and how many level and how many
    upright lines they are (a grid is one connected piece of ink, but many lines). On a sheet
    photographed turned a little, its lines are found again in the picture turned level by
    their own slant (``_slant``), and turned back."""
    runs = list(_long_lines(mask, extent))
    angle = _slant(mask)
    if angle:
        level = ndimage.rotate(mask.view(np.uint8), angle, reshape=True, order=0)
        # The turned picture's corners are outside it: counted as ink, so that a line may end
        # at the picture's edge where that edge cuts across it.
        level |= ndimage.rotate(np.zeros_like(mask, np.uint8), angle, order=0, cval=1)
        found = _long_lines(level.view(bool), extent, drift=1)
        # back, exactly: ndimage.rotate reads its input at R (o - c_out) + c_in; this reads
        # the level picture at R^T (p - c_in) + c_out for every pixel p of the mask
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        back = np.array([[c, -s], [s, c]])
        c_in, c_out = (np.array(mask.shape) - 1) / 2, (np.array(level.shape) - 1) / 2
        offset = c_out - back @ c_in
        for axis, lines in enumerate(found):
            turned = lines.view(np.uint8)
            lines = ndimage.affine_transform(turned, back, offset, mask.shape, order=0)
            runs[axis] |= lines.view(bool) & mask
    thick = [ndimage.binary_dilation(lines, iterations=1) for lines in runs]
    counts = (
        _line_count(runs[0], thick[0], extent[1]),
        _line_count(runs[1], thick[1], extent[0]),
    )
    return (thick[0], thick[1]), counts, angle


def _line_count(runs: np.ndarray, thick: np.ndarray, length: int) -> int:
    """How many of the pieces of ``thick`` (one direction's ``runs`` dilated, so gaps of a
    pixel are bridged) hold ink along half a line's ``length`` at least: not the bits of
    strokes that a turned picture's edge picks up."""
    labels, count = ndimage.label(thick)
    ink = np.bincount(labels.ravel(), weights=runs.ravel(), minlength=count + 1)[1:]
    return int(np.count_nonzero(ink >= length / 2))


def _long_lines(
    mask: np.ndarray, extent: tuple[int, int], drift: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The level and the upright runs of ink across 90% of ``extent`` (the sheet's or the
    picture's height and width): ruled lines, grid lines, paper edges (no digit is that wide).
    A faint line thresholds with gaps in it: gaps up to 4% of the run's length are bridged
    first. A run may wander ``drift`` pixels to either side (a line turned level to within a
    fraction of a degree)."""
    ink = mask.view(np.uint8)
    found = []
    for axis, size in ((1, extent[1]), (0, extent[0])):
        length, gap = max(3, int(0.9 * size)), max(3, size // 25)
        run = ink
        if drift:
            run = ndimage.maximum_filter1d(run, 2 * drift + 1, axis=1 - axis)
        # a closing then an opening by a straight line: min and max filters, each O(pixels)
        # whatever the length
        run = ndimage.maximum_filter1d(run, gap, axis=axis, mode="constant", cval=0)
        run = ndimage.minimum_filter1d(run, gap, axis=axis, mode="constant", cval=1)
        run = ndimage.minimum_filter1d(run, length, axis=axis, mode="constant", cval=0)
        run = ndimage.maximum_filter1d(run, length, axis=axis, mode="constant", cval=0)
        found.append((run & ink).view(bool))
    return found[0], found[1]


def _slant(mask: np.ndarray) -> float:
    """The angle (degrees, for ``ndimage.rotate``) that turns ruled or grid lines level (or
    upright, in a photo taken sideways), found to within SLANT_STEP among turns of up to SLANT
    degrees: the turn under which a Hough transform's votes are most concentrated. 0 when the
    lines are level already, or when fewer than three lines at that turn are each half as long
    as the picture: ruled paper has several, while a digit's bar, or a 1, is one stroke."""
    small = block_reduce(mask, (2, 2), np.max)  # half the size; a one-pixel line survives
    turns = np.arange(-SLANT, SLANT + SLANT_STEP / 2, SLANT_STEP)
    best, most = 0.0, 2
    # skimage's lines are x cos(theta) + y sin(theta) = rho: upright at theta = the turn,
    # level at the turn plus 90 degrees
    for extra, length in ((90, small.shape[1]), (0, small.shape[0])):
        votes = hough_line(small, np.deg2rad(turns + extra))[0].astype(np.float64)
        turn = int(np.argmax((votes**2).sum(axis=0)))
        long = votes[:, turn] >= 0.5 * length  # a thick line fills neighbouring rhos
        lines = int(long[0]) + np.count_nonzero(long[1:] & ~long[:-1])
        if lines > most:
            best, most = float(turns[turn]), lines
    return best if abs(best) >= SLANT_STEP / 2 else 0.0


# -- 3. components ---------------------------------------------------------------------------------


@dataclass
class Piece:
    """Ink that belongs together (one component, or the pieces of one digit): its box
    (top, left, bottom, right), exclusive at the bottom and right, and its pixel count."""

    box: tuple[int, int, int, int]
    area: int
    labels: list[int] = field(default_factory=list)
    whole: Piece | None = None  # a part of a split piece: the piece before the split
    solid: bool = False  # a filled region rather than strokes (see SOLID)

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def width(self) -> int:
        return self.box[3] - self.box[1]

    def sides(self, shape: tuple[int, int]) -> int:
        """How many of the picture's edges (a picture ``shape`` high and wide) the box touches."""
        top, left, bottom, right = self.box
        return (top == 0) + (left == 0) + (bottom == shape[0]) + (right == shape[1])

    def merged(self, other: Piece) -> Piece:
        a, b = self.box, other.box
        box = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
        return Piece(box, self.area + other.area, self.labels + other.labels)


def ink_components(ink: Ink) -> tuple[np.ndarray, list[Piece]]:
    """Label the ink (8-connected) and keep what can be part of a digit: no specks, and,
    while anything else is left, no long thin shapes (lines, paper edges) unless they run
    through another piece's box, or large shapes along the border (shadow borders).
    A tall thin 1 alone in its picture is kept."""
    labels, count = ndimage.label(ink.mask, structure=np.ones((3, 3)))
    if count == 0:
        return labels, []
    boxes = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    h, w = ink.mask.shape
    likely, lines, edges = [], [], []
    for index, (rows, cols) in enumerate(boxes, start=1):
        box = (rows.start, cols.start, rows.stop, cols.stop)
        piece = Piece(box, int(areas[index - 1]), [index])
        long_side, short_side = max(piece.height, piece.width), min(piece.height, piece.width)
        # a shadow's or the paper's edge runs from one side of the picture to another
        if piece.sides((h, w)) >= 2 and long_side > 0.5 * max(h, w):
            edges.append(piece)
        elif long_side > 0.6 * max(h, w) and long_side > 12 * short_side:
            lines.append(piece)
        else:
            likely.append(piece)
    # A long straight stroke that runs through another piece's box is that digit's (the stem
    # of a 4 drawn apart from its bar, a 7's long leg), not a ruled line: a ruled line that
    # crosses a digit is joined to its ink, or gone already (``_ruled_lines``); one that runs
    # along a digit, under it, is a line. Specks are no digit for which lines and edges are
    # dropped (a digit joined to a line that runs across the picture is that line's piece).
    likely = [piece for piece in likely if piece.area >= SPECK]
    stems = [line for line in lines if any(_overlap(line, piece) for piece in likely)]
    pieces = sorted(likely + stems or lines + edges, key=lambda piece: piece.labels[0])
    # Specks are judged against the largest piece that may be a digit: not a shadow's edge,
    # nor a filled region that dwarfs the rest (a dark object, a shadow inside the picture:
    # the digits would be specks beside it). Ink that is merely thick, as blurred digits
    # are, does not dwarf the other digits; and a fat digit beside specks stays the measure.
    by_area = sorted(pieces, key=lambda p: p.area, reverse=True)
    largest = by_area[0]
    for piece, after in zip(by_area, by_area[1:], strict=False):
        if after.area < MIN_SIDE**2 or piece.area < DWARF * after.area or not _solid(labels, piece):
            break
        piece.solid, largest = True, after
    return labels, [p for p in pieces if p.area >= max(SPECK, 0.01 * largest.area)]


def _overlap(a: Piece, b: Piece) -> bool:
    """Whether the boxes of ``a`` and ``b`` share pixels."""
    (a_top, a_left, a_bottom, a_right), (b_top, b_left, b_bottom, b_right) = a.box, b.box
    return max(a_top, b_top) < min(a_bottom, b_bottom) and max(a_left, b_left) < min(
        a_right, b_right
    )


def _depths(labels: np.ndarray, piece: Piece) -> np.ndarray:
    """The distance of each of ``piece``'s pixels to the background, inside its box."""
    top, left, bottom, right = piece.box
    inside = np.isin(labels[top:bottom, left:right], piece.labels)
    return ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1][inside]


def _solid(labels: np.ndarray, piece: Piece) -> bool:
    """Whether ``piece`` is a filled region, not strokes: its thickest part, measured by
    the distance to the background inside its box, is more than SOLID of its height."""
    return 2 * _depths(labels, piece).max() > SOLID * piece.height


def _stroke_length(labels: np.ndarray, piece: Piece) -> float:
    """The length of ``piece``'s strokes, up to a constant factor: its pixel count over its mean
    distance to the background (a filled blot's is about its outline's length)."""
    return piece.area / _depths(labels, piece).mean()


# -- 4. the digits ---------------------------------------------------------------------------------


def _near(a: Piece, b: Piece, margin: float) -> bool:
    """Whether b's box reaches within ``margin`` of a's size (its longer side) of a's box."""
    my = mx = margin * max(a.height, a.width)
    return not (
        b.box[2] < a.box[0] - my
        or b.box[0] > a.box[2] + my
        or b.box[3] < a.box[1] - mx
        or b.box[1] > a.box[3] + mx
    )


def central_digit(pieces: list[Piece], shape: tuple[int, int]) -> Piece:
    """The coherent ink nearest the centre: the piece with the best area, discounted by its
    distance from the centre, together with the pieces that touch its neighbourhood (pieces
    that run off the picture: only those that reach into its box)."""
    h, w = shape
    centre = np.array([h / 2, w / 2])

    def score(piece: Piece) -> float:
        middle = np.array([(piece.box[0] + piece.box[2]) / 2, (piece.box[1] + piece.box[3]) / 2])
        distance = np.linalg.norm((middle - centre) / np.array([h, w]))
        return piece.area * max(0.05, 1 - 1.5 * distance) ** 2

    def joins(digit: Piece, piece: Piece) -> bool:
        # Ink that runs off the picture beside a digit is a line or an edge (a ruled line
        # under it, broken); it is part of the digit only if it reaches into the digit's box.
        return _overlap(digit, piece) if piece.sides(shape) else _near(digit, piece, NEAR)

    digit = max(pieces, key=score)
    changed = True
    while changed:  # pieces of the same digit: a 5's bar, a broken 4, a dotted stroke
        changed = False
        for piece in pieces:
            if piece.labels[0] not in digit.labels and joins(digit, piece):
                digit = digit.merged(piece)
                changed = True
    return digit


def to_mnist(ink: Ink, labels: np.ndarray, digit: Piece, turn: float = 0.0) -> np.ndarray:
    """One digit's ink -> uint8 (28, 28), white on black, MNIST-style: turned by ``turn``
    degrees (``ndimage.rotate``'s sense: the turn that levels its row, ``_turn``, or its
    paper's ruled lines, ``Ink.turn``), strokes brought to MNIST's width for the digit's size,
    fitted into 20x20, centre of mass at the centre."""
    top, left, bottom, right = digit.box
    pad = max(2, int(0.15 * max(digit.height, digit.width)))
    window = (slice(max(top - pad, 0), bottom + pad), slice(max(left - pad, 0), right + pad))
    inside = np.zeros(labels.shape, bool)  # a split piece shares labels with its neighbours
    inside[top:bottom, left:right] = True
    mask = np.isin(labels[window], digit.labels) & inside[window]
    if turn:  # bilinear on the mask's 0s and 1s, then halfway: the strokes keep their width
        mask = ndimage.rotate(mask.astype(np.float32), turn, reshape=True, order=1) > 0.5
    mask = _normalise_strokes(mask, max(digit.height, digit.width))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ImageError("no digit found (its strokes vanished)")
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Box filtering from the (larger) crop anti-aliases the edges as MNIST's pen did.
    image = Image.fromarray(np.uint8(crop * 255))
    fitted = np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float64)
    return _centre_of_mass(fitted)


def _normalise_strokes(mask: np.ndarray, size: int) -> np.ndarray:
    """Dilate or erode ``mask`` so that its strokes are about ``STROKE`` of ``size`` wide."""
    distance = ndimage.distance_transform_edt(mask)
    ridge = (distance > 0) & (distance == ndimage.maximum_filter(distance, size=3))
    if not ridge.any():
        return mask
    width = 2 * float(np.median(distance[ridge]))
    change = STROKE * size - width
    steps = int(round(abs(change) / 2))
    if steps == 0:
        return mask
    disk = ndimage.generate_binary_structure(2, 1)
    if change > 0:
        return ndimage.binary_dilation(mask, structure=disk, iterations=steps)
    thinner = ndimage.binary_erosion(mask, structure=disk, iterations=steps)
    return thinner if thinner.sum() > 0.4 * mask.sum() else mask  # never erase the digit


def _centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """A fitted digit (h, w <= 20) in a 28x28 frame, its centre of mass at the centre."""
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


@dataclass
class Digit:
    """One digit found in a picture: its 28x28 image, its box in the file's pixels
    (left, top, right, bottom) and its ink mask at work resolution. A part of ink that was
    split as touching digits has ``whole``: the same ink read as one digit, for a reader that
    can tell which of the two is right (the network's confidence decides in ``read_number``)."""

    image: np.ndarray
    box: tuple[int, int, int, int]
    mask: np.ndarray
    whole: Digit | None = None


def _digit(
    picture: Picture, ink: Ink, labels: np.ndarray, piece: Piece, turn: float = 0.0
) -> Digit:
    top, left, bottom, right = piece.box
    s = picture.scale
    box = (int(left / s), int(top / s), math.ceil(right / s), math.ceil(bottom / s))
    mask = np.isin(labels[top:bottom, left:right], piece.labels)
    return Digit(to_mnist(ink, labels, piece, turn), box, mask)


def load_digit(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read an image of one digit and preprocess it: uint8 (28, 28), ready for
    ``Classifier.predict``."""
    return find_digit(source, name).image


def find_digit(
    source: str | Path | bytes | Picture, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Digit:
    """The digit of a one-digit image (or of a picture already read): the coherent ink
    nearest the centre."""
    label = name or (str(source) if not isinstance(source, (bytes, Picture)) else "image")
    picture = source if isinstance(source, Picture) else read_image(source, label, max_pixels)
    ink = ink_map(picture.grey)
    labels, pieces = ink_components(ink)
    if not pieces:
        raise ImageError(f"{label}: no digit found (the image is blank or has no contrast)")
    # One digit shows no turn of its own; the lines of the paper it is written on may.
    return _digit(picture, ink, labels, central_digit(pieces, picture.grey.shape), ink.turn)


def find_digits(source: str | Path | bytes | Picture, name: str | None = None) -> list[list[Digit]]:
    """Every digit of an image of a number (or several rows of them): rows from top to
    bottom, digits from left to right. Pieces of one digit are merged; touching digits split."""
    label = name or (str(source) if not isinstance(source, (bytes, Picture)) else "image")
    picture = source if isinstance(source, Picture) else read_image(source, label)
    ink = ink_map(picture.grey)
    labels, pieces = ink_components(ink)
    pieces = _digit_pieces(pieces, labels)
    if not pieces:
        raise ImageError(f"{label}: no digits found (the image is blank or has no contrast)")
    pieces = _split_touching(pieces, labels)
    found = _rows(pieces)
    turn = _turn(found) or ink.turn  # the rows' slope, or the ruled lines' if too few digits
    wholes = {id(p.whole): p.whole for p in pieces if p.whole is not None}
    wholes = {key: _digit(picture, ink, labels, whole, turn) for key, whole in wholes.items()}
    rows = []
    # A row whose every piece runs off the picture is the frame's: a desk's or a shadow's edge,
    # the blocks of a JPEG along it, not a row of the number, when another row has digits
    # clear of the edge (a number cropped tight touches the edge in every row).
    clear = [row for row in found if any(p.sides(ink.mask.shape) == 0 for p in row)]
    for row in clear or found:
        digits = [_digit(picture, ink, labels, p, turn) for p in row]
        for piece, digit in zip(row, digits, strict=True):
            digit.whole = wholes.get(id(piece.whole))
        rows.append(digits)
    return rows


def _digit_pieces(pieces: list[Piece], labels: np.ndarray) -> list[Piece]:
    """Merge the pieces of one digit (boxes that overlap horizontally by half the narrower
    one, close in height), then keep what is sized like the digits of a number: the digits
    agree in height, so pieces far taller (shadows, the paper's bottom) or far flatter
    (lines, edges) than the typical one are not digits, and neither are scraps (specks of
    dust, a few of them merged, with a tenth of a typical digit's ink or less)."""
    if not pieces:
        return []
    typical = _typical(pieces, labels).height
    merged: list[Piece] = []
    for piece in sorted(pieces, key=lambda p: p.box[1]):
        for i, other in enumerate(merged):
            overlap = min(piece.box[3], other.box[3]) - max(piece.box[1], other.box[1])
            gap = max(piece.box[0], other.box[0]) - min(piece.box[2], other.box[2])
            stroke = not (piece.solid or other.solid)  # a filled region is no digit's part
            if stroke and overlap >= 0.5 * min(piece.width, other.width) and gap < 0.4 * typical:
                merged[i] = other.merged(piece)
                break
        else:
            merged.append(piece)
    digit = _typical(merged, labels)
    height, area = digit.height, digit.area
    return [
        p
        for p in merged
        if 0.35 * height <= p.height <= 2.5 * height
        and p.width <= 6 * max(p.height, height)
        and p.area > SCRAP * area
        and not p.solid
    ]


def _typical(pieces: list[Piece], labels: np.ndarray) -> Piece:
    """A typical digit: the piece of median height weighted by the length of its strokes (the
    piece that holds the middle of the strokes, taken by height), of the pieces clear of the
    picture's edge and no flatter than four times as wide as high (a few touching digits are
    not), if there are any. However many specks of grain or dots of a shadow's edge there are,
    and whatever the dark strip of desk or shadow along the edge (or inside it, framed)
    weighs, that piece is a digit: a dark object counts by its outline, not its area."""
    inside = [p for p in pieces if p.sides(labels.shape) == 0 and not p.solid]
    upright = [p for p in inside if p.width <= 4 * p.height]
    order = sorted(upright or inside or pieces, key=lambda p: p.height)
    lengths = np.cumsum([_stroke_length(labels, p) for p in order])
    return order[int(np.searchsorted(lengths, lengths[-1] / 2))]


def _split_touching(pieces: list[Piece], labels: np.ndarray) -> list[Piece]:
    """Split a piece much wider than a digit at the columns with the least ink."""
    widths = sorted(p.width / max(p.height, 1) for p in pieces)
    typical = widths[len(widths) // 2] if len(widths) >= 3 else 0.7
    typical = min(max(typical, 0.45), 0.9)
    result = []
    for piece in pieces:
        aspect = piece.width / max(piece.height, 1)
        count = int(round(aspect / typical))
        if count < 2 or aspect < max(1.8 * typical, 1.2):  # a round 0 is not two digits
            result.append(piece)
            continue
        top, left, bottom, right = piece.box
        profile = np.isin(labels[top:bottom, left:right], piece.labels).sum(axis=0)
        cuts = [left]
        for k in range(1, count):
            guess = int(k * piece.width / count)
            lo, hi = (
                max(guess - piece.width // (3 * count), 1),
                min(guess + piece.width // (3 * count), piece.width - 1),
            )
            # a piece one pixel high is wider than it has columns for parts: hi < lo there
            cuts.append(left + lo + int(np.argmin(profile[lo : max(hi, lo) + 1])))
        cuts.append(right)
        area = piece.area // count
        result += [
            Piece((top, a, bottom, b), area, piece.labels, whole=piece)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True)
            if b > a
        ]
    return result


def _rows(pieces: list[Piece]) -> list[list[Piece]]:
    """Group pieces into rows; rows top to bottom, each left to right. A sheet photographed
    turned makes its rows slope: the grouping (``_rows_along``) is tried along slopes of up to
    20 degrees either way, and the slope that makes the fewest rows wins (the least steep of
    those): a level number is grouped as it lies."""
    height = float(np.median([p.height for p in pieces]))
    best = min((_rows_along(pieces, slope, height) for slope in ROW_SLOPES), key=len)
    return sorted(best, key=lambda row: np.mean([_middle(p) for p in row]))


def _turn(rows: list[list[Piece]]) -> float:
    """The angle (degrees, for ``ndimage.rotate``) that levels the rows of a number: the
    slope between the centres of every two pieces of a row, their median weighted by how far
    apart the two are (near neighbours' centres differ by their shapes more than by the
    turn). 0 under ``MIN_TURN``, or with fewer than three such pairs: one or two digits alone
    do not show a turn."""
    slopes, weights = [], []
    for row in rows:
        for i, a in enumerate(row):
            for b in row[i + 1 :]:
                across = _centre(b) - _centre(a)
                if across > 0:
                    slopes.append((_middle(b) - _middle(a)) / across)
                    weights.append(across)
    if len(slopes) < 3:
        return 0.0
    order = np.argsort(slopes)
    cumulative = np.cumsum(np.asarray(weights)[order])
    slope = slopes[order[np.searchsorted(cumulative, cumulative[-1] / 2)]]
    angle = math.degrees(math.atan(slope))
    return angle if abs(angle) >= MIN_TURN else 0.0


def _middle(piece: Piece) -> float:
    return (piece.box[0] + piece.box[2]) / 2


def _centre(piece: Piece) -> float:
    return (piece.box[1] + piece.box[3]) / 2


def _rows_along(pieces: list[Piece], slope: float, height: float) -> list[list[Piece]]:
    """Rows of pieces along ``slope`` (down per pixel right): taken left to right, a piece
    joins the row whose last piece is nearest its level (its middle less the slope times its
    centre), within 0.6 of a digit's ``height``, so a row may also bend a little from digit
    to digit."""

    def level(piece: Piece) -> float:
        return _middle(piece) - slope * _centre(piece)

    rows: list[list[Piece]] = []
    for piece in sorted(pieces, key=lambda p: p.box[1]):
        near = [row for row in rows if abs(level(row[-1]) - level(piece)) < 0.6 * height]
        if near:
            min(near, key=lambda row: abs(level(row[-1]) - level(piece))).append(piece)
        else:
            rows.append([piece])
    return rows


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write a uint8 grey image as a PNG, atomically."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(out, format="PNG")
    atomic_write(path, lambda f: f.write(out.getvalue()))
