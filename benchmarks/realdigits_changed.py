"""How well reading holds up when the development set's single digits and whole numbers are
changed the way other people's photos differ from them: noise, low contrast, uneven light, a
hard shadow (and a deep one), blur, size, a turn, ruled and squared paper.

    python benchmarks/realdigits_changed.py [--model MODEL] [--dev DIR] [--out FILE] [--faint F]

Each of the 250 pictures in ``../shared/data/realdigits-dev/images`` (never copied into the
repository, never trained on) is read as ``read_image`` reads it (grey, upright, at most
``WORK_SIDE`` pixels), changed, saved as an 8-bit PNG (a JPEG for "jpeg q30") and read back
through ``load_digit`` and the model, as ``scratchcnn predict`` reads a file; each of the 12
photos of numbers in ``multi/`` the same way through ``read_number``, as ``scratchcnn read``
does, right only when every row is read exactly. Noise is drawn
from a generator seeded by the picture's place in the sorted list, so runs repeat exactly.
Prints, and writes to ``--out`` (default ``benchmarks/results/realdigits-changed.txt``), the
share read right under each change and the pictures misread. ``--faint`` sets
``photos.FAINT`` (how faint ink joined to ink may be and still be ink; 1: none) for the run, to
weigh that trade-off: ``realdigits-changed-faint-1.0.txt`` is the run with ``--faint 1``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from realdigits import arguments, model_and_set
from scratchcnn import ScratchCNNError
from scratchcnn.app import photos
from scratchcnn.app.photos import border_median, load_digit, read_image
from scratchcnn.app.reader import read_number
from scratchcnn.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "realdigits-changed.txt"


def turned(grey: np.ndarray, degrees: float) -> np.ndarray:
    image = Image.fromarray(grey, "F")
    return np.asarray(
        image.rotate(degrees, Image.Resampling.BILINEAR, expand=True, fillcolor=border_median(grey))
    )


def resized(grey: np.ndarray, factor: float) -> np.ndarray:
    h, w = grey.shape
    size = (max(28, round(w * factor)), max(28, round(h * factor)))
    return np.asarray(Image.fromarray(grey, "F").resize(size, Image.Resampling.BILINEAR))


def framed(grey: np.ndarray, share: float) -> np.ndarray:
    """The picture with a margin of its border's median level, ``share`` of its size each side
    (a turned picture's corners are filled with that level too)."""
    h, w = grey.shape
    margin = ((round(h * share),) * 2, (round(w * share),) * 2)
    return np.pad(grey, margin, constant_values=border_median(grey))


PAPER_SIDE = 64


def on_paper(grey: np.ndarray) -> bool:
    """Whether a picture is dark ink on light paper, ``PAPER_SIDE`` pixels a side or more: what
    the changes of a photo of paper apply to (a grid or a shadow on a 28x28 drawing, or on
    chalk on a board, is no photo)."""
    return min(grey.shape) >= PAPER_SIDE and border_median(grey) > 0.5


def lined(grey: np.ndarray, rng: np.random.Generator, squared: bool) -> np.ndarray:
    """Ruled (or squared) paper: level (and upright) lines one pixel in 150 of the shorter side
    wide, a fifth of it apart from a random start, that take 30% of the light off whatever
    they cross, as printed lines do. Only ``on_paper`` pictures."""
    h, w = grey.shape
    if not on_paper(grey):
        return grey
    side = min(h, w)
    width, step = max(1, round(side / 150)), side / 5
    light = np.ones_like(grey)
    for axis in (0, 1) if squared else (0,):
        for start in np.arange(rng.uniform(0, step), grey.shape[axis], step).astype(int):
            light[(slice(None),) * axis + (slice(start, start + width),)] = 0.7
    return grey * light


def shadowed(grey: np.ndarray, rng: np.random.Generator, light: float = 0.45) -> np.ndarray:
    """A hard shadow (a hand's, a phone's) across the picture: one side of a straight edge at a
    random angle, through a random point of the middle 40% of the picture, gets ``light`` of
    the light. Only ``on_paper`` pictures."""
    if not on_paper(grey):
        return grey
    h, w = grey.shape
    angle = rng.uniform(0, 2 * np.pi)
    y0, x0 = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(np.cos(angle) * (xx - x0) + np.sin(angle) * (yy - y0) > 0, grey * light, grey)


# name -> change of grey values in [0, 1] (float32), given a generator for noise
CHANGES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "as read": lambda g, rng: g,
    "jpeg q30": lambda g, rng: g,  # saved as a JPEG of quality 30 instead of a PNG
    "noise 0.08": lambda g, rng: g + rng.normal(0, 0.08, g.shape),
    "low contrast": lambda g, rng: 0.35 + 0.3 * g,
    "lighter (gamma 0.45)": lambda g, rng: g**0.45,
    "darker (gamma 2.2)": lambda g, rng: g**2.2,
    "light falling off 1 -> 0.45": lambda g, rng: g * np.linspace(0.45, 1, g.shape[1])[None, :],
    "hard shadow across, 0.45": shadowed,
    "deep shadow across, 0.25": lambda g, rng: shadowed(g, rng, 0.25),
    "blurred": lambda g, rng: ndimage.gaussian_filter(g, max(g.shape) / 120),
    "inverted": lambda g, rng: 1 - g,
    "half size": lambda g, rng: resized(g, 0.5),
    "double size": lambda g, rng: resized(g, 2.0),
    "small in its frame": lambda g, rng: framed(g, 0.6),
    "turned 12 degrees left": lambda g, rng: turned(g, 12),
    "turned 12 degrees right": lambda g, rng: turned(g, -12),
    "ruled paper": lambda g, rng: lined(g, rng, squared=False),
    "squared paper": lambda g, rng: lined(g, rng, squared=True),
}


def encoded(grey: np.ndarray, jpeg: bool) -> bytes:
    image = Image.fromarray(np.uint8(np.clip(grey * 255 + 0.5, 0, 255)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=30) if jpeg else image.save(out, format="PNG")
    return out.getvalue()


def measure(paths: list[Path], read: Callable[[bytes, str], str]) -> tuple[list[str], list[str]]:
    """Each picture of ``paths`` under each change, read by ``read`` (bytes, name -> what is
    read), right when that is what its name starts with (``7_...``, ``8374787080_...``,
    ``12345-67890_...``): a row per change, and a line per change of what was misread."""
    pictures = [read_image(path).grey.astype(np.float32) for path in paths]
    lines, misread = [], []
    for name, change in CHANGES.items():
        right, wrong, touched = 0, [], 0
        for index, (path, grey) in enumerate(zip(paths, pictures, strict=True)):
            changed = change(grey, np.random.default_rng(index))
            touched += changed is not grey
            changed = np.clip(changed, 0, 1)
            try:
                guess = read(encoded(changed, name == "jpeg q30"), path.name)
            except ScratchCNNError:
                guess = "none found"
            right += guess == (expected := path.stem.split("_")[0])
            if guess != expected:
                wrong.append(f"{path.name} -> {guess}")
        lines.append(f"  {name:<29} {right:>3}/{len(paths)}  {100 * right / len(paths):5.1f}%")
        if 0 < touched < len(paths):
            lines[-1] += f"  ({touched} pictures changed, the rest as read)"
        misread.append(f"  {name}: " + ", ".join(wrong))
        print(lines[-1], flush=True)
    return lines, misread


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT), help="the report's file")
    parser.add_argument("--faint", type=float, help=f"photos.FAINT (default {photos.FAINT})")
    args = parser.parse_args(argv)
    if args.faint is not None:
        photos.FAINT = args.faint
    if (loaded := model_and_set(args)) is None:
        return 1
    clf, dev = loaded
    model = "bundled model" if args.model is None else args.model

    def digit(data: bytes, name: str) -> str:
        return str(clf.classes[int(clf.predict(load_digit(data, name=name)[None])[0])])

    def number(data: bytes, name: str) -> str:
        return "-".join(row.text for row in read_number(clf, data, name).rows)

    faint = "" if args.faint is None else f", photos.FAINT = {args.faint:g}"
    lines = [f"single digits of {dev.name} read by the {model}{faint}, each picture changed:"]
    print(lines[0])
    rows, misread = measure(sorted((dev / "images").iterdir()), digit)
    lines += rows
    lines.append(f"whole numbers of {dev.name} read exactly, each picture changed:")
    print(lines[-1])
    rows, misread_numbers = measure(sorted((dev / "multi").iterdir()), number)
    lines += rows
    lines += ["misread:", *misread, "numbers misread:", *misread_numbers]
    text = ("\n".join(lines) + "\n").encode()
    atomic_write(args.out, lambda out: out.write(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
