"""Reading numbers: every digit of a photo, classified, in rows.

    reading = read_number(clf, "photo.jpg")
    [row.text for row in reading.rows]        # ["12345", "67890"]
    reading.rows[0].digits[0].confidence      # calibrated probability of the digit read

The digits come from ``photos.find_digits`` (rows top to bottom, digits left to right). A
sheet photographed sideways without an EXIF rotation has digits no taller than wide, or reads
with little confidence: then the two quarter turns are read too, and the reading the network
is surest of wins (by ``TURN_MARGIN`` when the digits stood upright). A digit whose
confidence is below the classifier's calibrated threshold is "unsure" (``?`` in the text).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError
from .classifier import Classifier
from .photos import MAX_PIXELS, Digit, Picture, find_digits, open_image, read_image

TURN_MARGIN = 0.1  # how much surer (mean confidence) a turned reading of upright digits must be
TURN_SHARE = 0.5  # the least share of the digits found upright that a turned reading must find


@dataclass
class ReadDigit:
    """One digit read: the class, its calibrated probability, all probabilities, whether it
    is under the threshold, its box (left, top, right, bottom) in the file's pixels and the
    28x28 image the network saw."""

    text: str
    confidence: float
    probabilities: list[float]
    unsure: bool
    box: tuple[int, int, int, int]
    image: np.ndarray


@dataclass
class Row:
    digits: list[ReadDigit]

    @property
    def text(self) -> str:
        return "".join("?" if d.unsure else d.text for d in self.digits)


@dataclass
class Reading:
    rows: list[Row]
    quarter_turns: int  # how far the picture was turned to read it (0: as stored)

    @property
    def unsure(self) -> bool:
        return any(d.unsure for row in self.rows for d in row.digits)

    def to_json(self) -> dict:
        return {
            "rows": [
                {
                    "text": row.text,
                    "digits": [
                        {
                            "digit": d.text,
                            "confidence": d.confidence,
                            "unsure": d.unsure,
                            "box": list(d.box),
                            "probabilities": d.probabilities,
                        }
                        for d in row.digits
                    ],
                }
                for row in self.rows
            ],
            "quarter_turns": self.quarter_turns,
            "unsure": self.unsure,
        }


def _turned(picture: Picture, turns: int) -> Picture:
    """The picture turned by ``turns`` quarter turns counter-clockwise."""
    w, h = picture.size
    size = (h, w) if turns % 2 else (w, h)
    grey = np.ascontiguousarray(np.rot90(picture.grey, turns))
    return Picture(grey, size, picture.scale, picture.pages)


def _unturn(box: tuple[int, int, int, int], turns: int, size: tuple[int, int]) -> tuple:
    """A box (left, top, right, bottom) found in a picture turned ``turns`` quarter turns
    counter-clockwise, in the coordinates of the picture as stored (``size`` = (w, h))."""
    left, top, right, bottom = box
    w, h = size
    if turns == 1:  # rotated row i is stored column w-1-i; rotated column j is stored row j
        return (w - bottom, left, w - top, right)
    if turns == 3:  # rotated row i is stored column i; rotated column j is stored row h-1-j
        return (top, h - right, bottom, h - left)
    return box


def _unsplit(rows: list[list[Digit]], sure: dict[int, float]) -> list[list[Digit]]:
    """Ink split as touching digits by its shape alone (a wide 0 looks like two digits that
    touch) goes back together when the network is surer of it whole than, on average, of its
    parts. ``sure``: the top probability of every digit and whole, by ``id``."""
    parts: dict[int, list[Digit]] = {}
    for row in rows:
        for digit in row:
            if digit.whole is not None:
                parts.setdefault(id(digit.whole), []).append(digit)
    joined = {
        key
        for key, pieces in parts.items()
        if sure[key] >= np.mean([sure[id(piece)] for piece in pieces])
    }
    out = []
    for row in rows:
        digits: list[Digit] = []
        for digit in row:
            whole = digit.whole
            if whole is None or id(whole) not in joined:
                digits.append(digit)
            elif not digits or digits[-1] is not whole:  # its first part stands for it
                digits.append(whole)
        out.append(digits)
    return out


def _classify(clf: Classifier, rows: list[list[Digit]]) -> tuple[list[Row], float]:
    """Every digit read (split ink put back together where the network prefers it whole),
    and the mean top probability: how sure the network is of this reading."""
    found = [d for row in rows for d in row]
    wholes = {id(d.whole): d.whole for d in found if d.whole is not None}
    candidates = found + list(wholes.values())
    computed = clf.predict_proba(np.stack([d.image for d in candidates]))
    probs = dict(zip(map(id, candidates), computed, strict=True))
    rows = _unsplit(rows, {key: float(p.max()) for key, p in probs.items()})
    read, tops = [], []
    for row in rows:
        digits = []
        for digit in row:
            p = probs[id(digit)]
            best = int(p.argmax())
            tops.append(float(p[best]))
            digits.append(
                ReadDigit(
                    clf.classes[best],
                    float(p[best]),
                    [float(v) for v in p],
                    bool(p[best] < clf.threshold),
                    digit.box,
                    digit.image,
                )
            )
        read.append(Row(digits))
    return read, float(np.mean(tops))


def read_number(
    clf: Classifier,
    source: str | Path | bytes | Picture,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Reading:
    """Read every digit of an image of a number (or of several rows of numbers), or of a
    picture already read (``read_image``)."""
    picture = source if isinstance(source, Picture) else read_image(source, name, max_pixels)
    rows = find_digits(picture, name)
    boxes = [d.box for row in rows for d in row]
    aspect = float(np.median([(b[3] - b[1]) / max(b[2] - b[0], 1) for b in boxes]))
    best = (*_classify(clf, rows), 0)
    # Digits wider than tall: the picture probably lies sideways. Digits upright but read with
    # little confidence: it may, but a network is often sure of a digit turned on its side too,
    # so then a turned reading has to be clearly surer to win.
    margin = 0.0 if aspect < 1.0 else TURN_MARGIN
    # A mean over one digit is no match for a mean over ten: a turned reading that finds under
    # half the digits has read a stroke or an edge, not the number (a row of digits on a sheet
    # read turned as the sheet's edge, a "1").
    least = TURN_SHARE * sum(len(row) for row in rows)
    if aspect < 1.0 or best[1] < 0.9:
        for turns in (1, 3):
            try:
                turned_rows = find_digits(_turned(picture, turns), name)
            except ImageError:
                continue
            read, confidence = _classify(clf, turned_rows)
            if confidence > best[1] + margin and sum(len(row) for row in turned_rows) >= least:
                best = (read, confidence, turns)
    read, _, turns = best
    for row in read:
        for digit in row.digits:
            digit.box = _unturn(digit.box, turns, picture.size)
    return Reading(read, turns)


def annotate(source: str | Path, reading: Reading, out: str | Path, page: int = 0) -> None:
    """A copy of the picture (of a PDF, page ``page`` from 0, as it was read) with each
    digit's box and reading drawn on it (unsure ones in orange with a question mark), as a PNG
    at most 1600 pixels across."""
    from PIL import ImageDraw, ImageFont, ImageOps

    from ..fileio import atomic_write

    with open_image(source, page=page) as img:
        img.draft("RGB", (1600, 1600))
        picture = ImageOps.exif_transpose(img).convert("RGB")
    scale = min(1.0, 1600 / max(picture.size))
    full = picture.size
    if scale < 1.0:
        picture = picture.resize((round(full[0] * scale), round(full[1] * scale)))
    factor = picture.size[0] / full[0]
    draw = ImageDraw.Draw(picture)
    width = max(2, picture.size[0] // 300)
    try:
        font = ImageFont.load_default(size=12 * width)
    except TypeError:  # Pillow before 10.1 has one size
        font = ImageFont.load_default()
    for row in reading.rows:
        for digit in row.digits:
            box = [v * factor for v in digit.box]
            colour = (230, 120, 0) if digit.unsure else (0, 170, 60)
            draw.rectangle(box, outline=colour, width=width)
            label = f"{digit.text}?" if digit.unsure else digit.text
            draw.text((box[0], max(0, box[1] - 14 * width)), label, fill=colour, font=font)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write(out, lambda f: f.write(buffer.getvalue()))
