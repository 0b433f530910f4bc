"""Reading real handwriting (#14): the photo pipeline, whole numbers, the bundled model,
calibrated "unsure", and the command line's predict and read.

Photo-like pictures come from tests/photogen.py (MNIST test digits on paper, in CI); the real
development set in ../shared/data/realdigits-dev is used when it is there, and skipped with the
reason otherwise. Accuracy floors were measured first (figures in the comments) and set a
little below.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from photogen import digit_photo, number_photo, on_desk, on_grid
from scratchcnn import ImageError
from scratchcnn.app import Classifier, default_model
from scratchcnn.app.photos import (
    NOISE,
    WORK_SIDE,
    border_median,
    denoised,
    find_digit,
    find_digits,
    ink_map,
    load_digit,
    noise_level,
    open_image,
    page_count,
    paper_sheet,
    read_image,
)
from scratchcnn.app.reader import read_number
from scratchcnn.data import load

from helpers import one_clear_line, run

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "realdigits-dev"


@pytest.fixture(scope="module")
def bundled() -> Classifier:
    return Classifier.load(default_model())


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    return load("mnist", "test", mnist_dir)


# -- the bundled model -----------------------------------------------------------------------


def test_the_bundled_model_is_small_and_scores_99_5_on_mnist(bundled, test_digits):
    images, labels = test_digits
    assert default_model().stat().st_size < 600_000  # a few hundred KB of package data
    accuracy = bundled.evaluate(images, labels)["accuracy"]
    print(f"bundled model: {100 * accuracy:.2f}% on the MNIST test set")
    assert accuracy >= 0.995
    assert 0 < bundled.threshold < 1 and bundled.temperature > 0  # calibrated


def test_predict_read_and_serve_need_no_model_argument(tmp_path, test_digits):
    images, labels = test_digits
    photo = tmp_path / "seven.png"
    photo.write_bytes(digit_photo(images[0], seed=1))
    result = run("predict", str(photo))
    assert result.returncode in (0, 3), result.stderr
    assert "the bundled model (digits.npz)" in result.stdout
    assert f"seven.png: {labels[0]}" in result.stdout
    number = tmp_path / "number.png"
    number.write_bytes(number_photo([[images[i] for i in range(4)]], seed=2))
    result = run("read", str(number), "--json")
    assert result.returncode in (0, 3), result.stderr
    document = json.loads(result.stdout)
    assert "bundled" in document["model"]
    assert document["images"][0]["rows"][0]["text"] == "".join(map(str, labels[:4]))


# -- the pipeline on generated photos ----------------------------------------------------------


def test_single_digit_photos(bundled, test_digits):
    images, labels = test_digits
    count, right, missed = 300, 0, 0
    for i in range(count):
        try:  # a hard shadow across a thin digit can hide it: that counts as a miss
            digit = load_digit(digit_photo(images[i], seed=i))
        except ImageError:
            missed += 1
            continue
        right += int(bundled.predict(digit[None])[0]) == labels[i]
    print(f"generated single-digit photos: {right}/{count} ({missed} not found)")
    assert right / count >= FLOOR_SINGLE


def random_numbers(images, labels, count: int, seed: int, first_photo: int, turns=None, **options):
    """``count`` (photo, expected rows) of one or two rows of 3-6 test digits, the photos made
    with seeds ``first_photo``, ``first_photo + 1``, ..., turned by ``turns[k]`` degrees when
    given; ``options`` go to ``number_photo``."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        rows = [
            list(rng.integers(0, len(images), int(rng.integers(3, 7))))
            for _ in range(int(rng.integers(1, 3)))
        ]
        expected = ["".join(str(labels[i]) for i in row) for row in rows]
        digits = [[images[i] for i in row] for row in rows]
        turn = 0.0 if turns is None else float(turns[k])
        yield number_photo(digits, seed=first_photo + k, turn=turn, **options), expected


def test_number_photos(bundled, test_digits):
    images, labels = test_digits
    exact, digits_right, digits = 0, 0, 0
    count = 40
    for photo, expected in random_numbers(images, labels, count, seed=0, first_photo=1000):
        got = [row.text for row in read_number(bundled, photo).rows]
        exact += got == expected
        for want, have in zip(expected, got + [""] * len(expected), strict=False):
            digits_right += sum(a == b for a, b in zip(want, have, strict=False))
            digits += len(want)
    print(f"generated numbers: {exact}/{count} exact, digits {digits_right}/{digits}")
    assert exact / count >= FLOOR_NUMBERS_EXACT and digits_right / digits >= FLOOR_NUMBER_DIGITS


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("turn, lines", [(0, 170), (0, 90), (1, 90), (-3, 90), (8, 90)])
def test_a_wide_zero_stays_whole_and_a_ruled_line_does_not_cut_a_digit(bundled, turn, lines):
    """A 0 half again as wide as tall looks, by shape, like touching digits: the network is
    surer of it whole, so it stays one digit. A 1 drawn across three ruled lines stays one, on
    a sheet photographed level or turned (the 7 and the 0 touch lines too). Before lines were
    looked for at a slant, dark lines turned 1 to 8 degrees left no digit or read as 1s."""
    img = Image.new("L", (520, 300), 250)  # the photo (420x200) is cut from its middle
    draw = ImageDraw.Draw(img)
    for y in range(10, 300, 30):
        draw.line([(0, y), (520, y)], fill=lines, width=2)
    draw.ellipse([90, 105, 230, 195], outline=20, width=9)
    draw.line([(310, 90), (312, 210)], fill=20, width=9)
    draw.line([(380, 100), (440, 100), (400, 210)], fill=20, width=9, joint="curve")
    img = img.rotate(turn, resample=Image.Resampling.BICUBIC).crop((50, 50, 470, 250))
    reading = read_number(bundled, png(img))
    assert [row.text for row in reading.rows] == ["017"]


def test_a_faint_line_broken_into_dashes_is_no_crash():
    """A faint line at a slant can threshold into dashes one pixel high. Splitting such a
    piece asked for more parts than it has columns: an empty argmin, a ValueError."""
    img = Image.new("L", (400, 300), 250)
    draw = ImageDraw.Draw(img)
    for row in range(30, 300, 40):
        for k in range(0, 400, 8):
            draw.line([(k, row + k // 16), (k + 5, row + k // 16)], fill=60, width=1)
    rows = find_digits(png(img))  # raised ValueError before
    boxes = [digit.box for row in rows for digit in row]
    assert boxes and all(right > left and bottom > top for left, top, right, bottom in boxes)


def test_a_number_photographed_sideways_is_read_upright(bundled, test_digits):
    images, labels = test_digits
    digits = [images[np.flatnonzero(labels == k)[2]] for k in (3, 0, 7, 5)]
    photo = Image.open(io.BytesIO(number_photo([digits], seed=5)))
    upright = read_number(bundled, png(photo))
    assert [row.text for row in upright.rows] == ["3075"] and upright.quarter_turns == 0
    sideways = read_number(bundled, png(photo.transpose(Image.Transpose.ROTATE_90)))
    assert [row.text for row in sideways.rows] == ["3075"] and sideways.quarter_turns == 3


def test_a_4_whose_stem_is_drawn_apart_from_its_bar_is_read_whole():
    """A 4 drawn as a "<" and a long stem that its tip stops short of: the stem runs most of
    the picture's height, as a ruled line turned upright would, but through the box of the rest
    of the digit, so it is the digit's (measured: before, the "<" alone went to the network)."""
    img = Image.new("L", (160, 290), 230)
    draw = ImageDraw.Draw(img)
    draw.line([(98, 28), (22, 84), (92, 84)], fill=30, width=5, joint="curve")  # "<" and bar
    draw.line([(101, 40), (101, 275)], fill=30, width=5)  # the stem, below the tip
    left, top, right, bottom = find_digit(png(img)).box
    assert bottom >= 270 and right >= 102


def test_a_broken_ruled_line_that_runs_off_the_picture_is_not_part_of_the_digit_above_it():
    """The end of a ruled line (the rest of it too faint, or broken off) under a 0, running off
    the picture's edge: near the digit, but ink that runs off the picture is a line or an
    edge unless it reaches into the digit's box (measured: before, the 0 and the line went to
    the network together, and the development set's 0_krisut_2 halved in size read as a 9)."""
    img = Image.new("L", (110, 125), 230)
    draw = ImageDraw.Draw(img)
    draw.ellipse([25, 15, 85, 95], outline=40, width=6)
    draw.line([(45, 108), (110, 106)], fill=90, width=3)
    left, top, right, bottom = find_digit(png(img)).box
    assert (left, top) == (25, 15) and right <= 90 and bottom <= 100


def test_a_faint_stroke_joined_to_firm_ones_is_ink():
    """A 4 whose bar is drawn lightly between two firm strokes, as a pencil leaves it: the bar
    is fainter than the threshold the firm strokes set, but joined to them it is ink too
    (measured: before, the network saw a "/" and a "1" apart)."""
    img = Image.new("L", (150, 150), 235)
    draw = ImageDraw.Draw(img)
    draw.line([(70, 25), (30, 95)], fill=60, width=5)
    draw.line([(95, 40), (95, 130)], fill=60, width=5)
    draw.line([(30, 95), (115, 95)], fill=165, width=3)  # the bar
    digit = find_digit(png(img))
    left, top, right, _ = digit.box
    assert right >= 115
    assert digit.mask[95 - top - 1 : 95 - top + 2, 60 - left].any()  # between the strokes


def five_digits(test_digits, seed: int) -> tuple[list[np.ndarray], str]:
    """Five MNIST test digits picked by ``seed``, and the number they make."""
    images, labels = test_digits
    picks = np.random.default_rng(seed).integers(0, len(images), 5)
    return [images[i] for i in picks], "".join(str(labels[i]) for i in picks)


def number_on_sheet(
    digits: list[np.ndarray], seed: int, size: tuple[float, float], at: tuple[float, float] = (0, 0)
) -> tuple[Image.Image, int, int]:
    """A photo of one row of ``digits`` (``number_photo``, no lines) pasted on a larger sheet of
    its paper's grey, ``size`` times its width and height, its top left corner ``at`` (shares of
    its width and height): the sheet, and the photo's width and height."""
    photo = Image.open(io.BytesIO(number_photo([digits], seed=seed, lines="none"))).convert("L")
    w, h = photo.size
    paper = int(np.median(np.asarray(photo)[0]))
    sheet = Image.new("L", (int(size[0] * w), int(size[1] * h)), paper)
    sheet.paste(photo, (int(at[0] * w), int(at[1] * h)))
    return sheet, w, h


def test_ink_cut_by_the_pictures_edge_below_a_number_is_no_row_of_it(bundled, test_digits):
    """Dark blocks that the picture's bottom edge cuts (a desk's edge, the blocks a JPEG makes
    of it) under a number read clear of the edges: not a second row (measured: before, every
    picture was read with a second row, "000")."""
    for seed in range(4):
        digits, number = five_digits(test_digits, seed)
        sheet, w, h = number_on_sheet(digits, seed, (1, 2.2))
        draw = ImageDraw.Draw(sheet)
        for k in range(3):
            x = int(w * (0.2 + 0.25 * k))
            draw.rectangle([x, sheet.height - h // 3, x + h // 4, sheet.height], fill=50)
        rows = read_number(bundled, png(sheet)).rows
        assert len(rows) == 1
        if seed == 0:
            assert rows[0].text == number


def test_a_dark_bar_beside_a_number_does_not_set_the_size_of_its_digits(bundled, test_digits):
    """A dark bar (a pen, a phone's edge, a finger's shadow) beside a number, with more ink than
    all its digits: the typical digit, which sets what is sized like a digit, is judged by the
    length of the strokes, where the bar counts by its outline. Measured: 0 of these 6 read
    exactly when it was judged by area (each read as "1", the bar), 4 of 6 by stroke length."""
    exact = 0
    for seed in range(6):
        digits, number = five_digits(test_digits, seed)
        sheet, w, h = number_on_sheet(digits, seed, (1.5, 3), (0.45, 1))
        size, top = h // 2, int(1.2 * h)
        bar = [size // 2, top, size // 2 + int(0.6 * size), top + 2 * size]
        ImageDraw.Draw(sheet).rectangle(bar, fill=45)
        reading = read_number(bundled, png(sheet))
        exact += [row.text for row in reading.rows] == [number]
    assert exact >= 4


def framed_number_beside_a_dark_object(digits: list[np.ndarray], seed: int) -> bytes:
    """A number on a sheet, a dark object (a phone) across the sheet's corner below it, the
    photo small in a grey frame: upright, a dark rim that reads as one sure "1" or "0" when
    the picture is turned."""
    sheet, w, h = number_on_sheet(digits, seed, (1, 3))
    ImageDraw.Draw(sheet).rounded_rectangle(
        [w // 5, int(1.8 * h), w + h, 4 * h], radius=h // 3, fill=45
    )
    grey = np.asarray(sheet)
    margin = ((round(grey.shape[0] * 0.6),) * 2, (round(grey.shape[1] * 0.6),) * 2)
    return png(Image.fromarray(np.pad(grey, margin, constant_values=int(border_median(grey)))))


def test_a_turned_reading_of_an_edge_does_not_win_over_the_digits(bundled, test_digits):
    """Upright digits read with middling confidence are read turned too, in case the picture
    lies sideways; a turned reading that finds under half as many digits has read an edge or
    a stroke, however sure of it the network is (measured on these pictures: seeds 2 and 3
    were read turned, as "1" and "0", before)."""
    images, labels = test_digits
    for seed in range(4):
        picks = np.random.default_rng(seed).integers(0, len(images), 8)
        photo = framed_number_beside_a_dark_object([images[i] for i in picks], seed)
        reading = read_number(bundled, photo)
        assert reading.quarter_turns == 0
        assert sum(len(row.digits) for row in reading.rows) >= 6


def test_a_sheet_on_a_desk_is_read_as_if_the_desk_were_not_there(bundled, test_digits):
    """Photos as a camera takes them: the sheet turned a little on a darker desk. Its edge
    is not ink, and a row that slopes with the sheet stays one row."""
    images, labels = test_digits
    exact, count = 0, 12
    for k, (photo, expected) in enumerate(
        random_numbers(images, labels, count, seed=5, first_photo=2000)
    ):
        try:
            reading = read_number(bundled, on_desk(photo, seed=k))
        except ImageError:  # no digits found: a miss
            continue
        exact += [row.text for row in reading.rows] == expected
    right, singles = 0, 30
    for i in range(singles):
        try:
            digit = load_digit(on_desk(digit_photo(images[i], seed=i), seed=i))
        except ImageError:  # a hard shadow over the digit as well as a desk: a miss
            continue
        right += int(bundled.predict(digit[None])[0]) == labels[i]
    print(f"on a desk: numbers {exact}/{count} exact, single digits {right}/{singles}")
    assert exact / count >= FLOOR_DESK_NUMBERS and right / singles >= FLOOR_DESK_SINGLE


def test_the_sheet_is_found_only_where_a_desk_surrounds_it(test_digits):
    images, labels = test_digits
    photo = number_photo([[images[i] for i in range(4)]], seed=3)
    assert paper_sheet(read_image(photo, "photo").grey) is None  # the paper fills the picture
    picture = read_image(on_desk(photo, seed=3), "on a desk")
    sheet = paper_sheet(picture.grey)
    assert sheet is not None and 0.2 < sheet.mean() < 0.9
    for row in find_digits(picture):  # every digit lies on the sheet
        for digit in row:
            left, top, right, bottom = (round(v * picture.scale) for v in digit.box)
            assert sheet[top:bottom, left:right].mean() > 0.9


@pytest.mark.parametrize("desk", [0.25, 0.6], ids=["dark-desk", "light-desk"])
def test_a_sheet_on_a_desk_with_a_hard_shadow_across_it_is_one_sheet(desk):
    """A hand's or a phone's shadow over the lower part of a sheet on a desk: the shadowed
    paper (lighter than the desk, or darker) is part of the sheet, and neither the shadow's
    edge nor the sheet's is read as ink, whether the digit is in the light or the shadow."""
    for rows, box in (
        (slice(80, 160), (190, 80, 198, 160)),
        (slice(190, 240), (190, 190, 198, 240)),
    ):
        grey = np.full((300, 400), desk, np.float32)
        grey[50:250, 80:320] = 0.85  # the sheet
        grey[180:250, 80:320] *= 0.55  # the shadow: paper at 0.47
        grey[rows, 190:198] *= 0.12  # a 1
        grey *= np.random.default_rng(0).normal(1, 0.02, grey.shape).astype(np.float32)  # grain
        sheet = paper_sheet(grey)
        assert sheet is not None and sheet[55:245, 85:315].all() and not sheet[:45].any()
        assert find_digit(png(Image.fromarray(np.uint8(grey * 255)))).box == box


def hard_shadow() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A page with a hard shadow over its lower part, and a 1 written in the shadow."""
    grey = np.full((300, 300), 0.9, np.float32)
    grey[180:] = 0.45
    grey[200:280, 140:152] = 0.08
    return grey, (140, 200, 152, 280)


def board_beside_a_wall() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A white wall, and beside it a blackboard with a 1 in chalk."""
    grey = np.full((300, 400), 0.85, np.float32)
    grey[:, 240:] = 0.2
    grey[100:200, 310:320] = 0.9
    return grey, (310, 100, 320, 200)


@pytest.mark.parametrize("scene", [hard_shadow, board_beside_a_wall], ids=lambda f: f.__name__)
def test_what_lies_beside_a_bright_area_is_kept_when_it_has_ink(scene):
    """A hard shadow's edge, or a board's beside a white wall, is as sharp as a sheet's on a
    desk: what lies there is not painted over when it holds ink, dark or light."""
    grey, box = scene()
    assert paper_sheet(grey) is not None  # the bright part alone looks like a sheet on a desk
    assert find_digit(png(Image.fromarray(np.uint8(grey * 255)))).box == box


def test_a_number_written_on_a_slope_is_one_row(bundled, test_digits):
    images, labels = test_digits
    wanted = [4, 1, 9, 6, 2, 8, 3]
    digits = [images[np.flatnonzero(labels == d)[4]] for d in wanted]
    photo = Image.open(io.BytesIO(number_photo([digits], seed=6))).convert("L")
    sloped = photo.rotate(8, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=250)
    reading = read_number(bundled, png(sloped))
    assert [row.text for row in reading.rows] == ["".join(map(str, wanted))]


@pytest.mark.parametrize("degrees", [-14, -10, 10, 14])
def test_two_rows_of_digits_spaced_wide_keep_their_rows_when_turned(bundled, test_digits, degrees):
    # Two rows of five digits, each digit two of its heights from the next, photographed
    # turned: each step along a row climbs or drops 0.4-0.6 of a digit's height, which was
    # more than a row's next digit may stray from the level of the one before; rows were cut
    # up and mixed. Now a row's next digit is looked for on the line of its last two.
    images, labels = test_digits
    top, bottom = (
        [int(np.flatnonzero(labels == d)[2]) for d in row]
        for row in ([3, 1, 4, 1, 5], [9, 2, 6, 5, 3])
    )
    values = np.full((560, 5 * 250 + 100), 0.9)
    for row, wanted in ((60, top), (300, bottom)):
        for k, digit in enumerate(wanted):
            left = 80 + 250 * k
            values[row : row + 112, left : left + 112][pen_thin(images[digit])] = 0.15
    picture = Image.fromarray(np.uint8(values * 255)).rotate(
        degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=230
    )
    reading = read_number(bundled, png(picture))
    assert [row.text for row in reading.rows] == [
        "".join(str(labels[d]) for d in wanted) for wanted in (top, bottom)
    ]


def test_ruled_lines_turned_with_the_sheet_are_not_read_as_ink(bundled, test_digits):
    """Numbers on paper ruled as dark as pencil, photographed a little askew (2 to 7 degrees
    either way): the lines are found at their slant and taken out, so the digits written
    across them read alone."""
    images, labels = test_digits
    count = 12
    turns = np.random.default_rng(8).uniform(2, 7, count) * np.tile([1, -1], count // 2)
    exact, digits_right, digits = 0, 0, 0
    numbers = random_numbers(images, labels, count, 8, 4000, turns=turns, lines="dark")
    for photo, expected in numbers:
        digits += sum(map(len, expected))
        try:
            got = [row.text for row in read_number(bundled, photo).rows]
        except ImageError:  # no digits found: a miss
            continue
        exact += got == expected
        for want, have in zip(expected, got + [""] * len(expected), strict=False):
            digits_right += sum(a == b for a, b in zip(want, have, strict=False))
    print(
        f"numbers on dark ruled paper turned 2-7 degrees: {exact}/{count} exact, "
        f"digits {digits_right}/{digits}"
    )
    assert exact / count >= FLOOR_TURNED_LINES and digits_right / digits >= FLOOR_TURNED_DIGITS


def pen_number(text: str, turn: float, ruled: bool = False) -> bytes:
    """``text`` (of 1, 4 and 7) drawn in pen strokes on white (``ruled``: on grey lines, the
    digits standing on one), turned ``turn`` degrees (Pillow's sense: positive is
    anticlockwise), as PNG. Its 1s are written with a flag at the top, as much of Europe
    writes them; MNIST's 1s have none."""
    height = 100
    strokes = {  # each a polyline, in hundredths of the height
        "1": [[(15, 28), (42, 0), (42, 100)]],
        "4": [[(35, 0), (0, 65), (60, 65)], [(45, 30), (45, 100)]],
        "7": [[(0, 0), (55, 0), (20, 100)]],
    }
    top = 150 + (2 * height if ruled else 0)  # the margin above and below: room for lines
    width = len(text) * 90 + 300
    sheet = Image.new("L", (width, top + height + top), 255)
    draw = ImageDraw.Draw(sheet)
    for y in range(top + height + 5 - 6 * 120, sheet.size[1], 120) if ruled else ():
        draw.line([(0, y), (width, y)], fill=90, width=3)
    for i, char in enumerate(text):
        for line in strokes[char]:
            points = [(150 + i * 90 + x * height / 100, top + y * height / 100) for x, y in line]
            draw.line(points, fill=0, width=9, joint="curve")
    return png(sheet.rotate(turn, resample=Image.Resampling.BICUBIC, fillcolor=255))


@pytest.mark.parametrize("turn", [-16, -12, -8, 8, 12, 16])
def test_digits_of_a_turned_number_are_read_upright(bundled, turn):
    """A number photographed turned: the rows' slope shows the turn, and each digit is turned
    back by it before it is read. Turned clockwise, a flagged 1's flag lies level like a 7's
    bar: these read "7777" and "4777" (or with "?") turned 8 to 16 degrees clockwise before
    (``photos._turn``), and right turned anticlockwise."""
    for number in ("1171", "4117"):
        assert [row.text for row in read_number(bundled, pen_number(number, turn)).rows] == [number]


@pytest.mark.parametrize("turn", [-12, -8, 8, 12])
def test_a_digit_on_ruled_paper_is_read_upright_by_the_lines_slant(bundled, turn):
    """A flagged 1 alone, and two of them, on dark ruled paper photographed turned: too few
    digits for a row to show the turn, but the lines' slant shows it, and they are turned back
    by it. Turned 8 and 12 degrees clockwise, both read as 7s before."""
    digit = load_digit(pen_number("1", turn, ruled=True))
    assert int(bundled.predict(digit[None])[0]) == 1
    reading = read_number(bundled, pen_number("11", turn, ruled=True))
    assert [row.text for row in reading.rows] == ["11"]


def test_ones_cropped_tight_are_digits_not_ruled_lines(bundled):
    """Strokes from the top of the picture to its bottom look like ruled lines turned upright;
    when they are all the ink there is, they are 1s, however many of them there are."""
    for count in (1, 3, 5):
        ones = np.full((60, 40 * count), 255, np.uint8)
        for k in range(count):
            ones[1:59, 40 * k + 18 : 40 * k + 22] = 0
        reading = read_number(bundled, png(Image.fromarray(ones)))
        assert [row.text for row in reading.rows] == ["1" * count]


# Measured on a desk before the sheet was cut out and rows could slope: 2/12 numbers exact,
# 14/30 single digits; after: 9/12 and 22/30 (misses: a hard shadow as well as a desk, a
# desk about as light as the paper, a sheet whose dim end is left out of it, ruled lines
# turned far enough to read as strokes). 27/30 single digits once paper under a hard shadow
# was joined to the sheet and relit (``photos._shadowed_part``, ``photos._relit``); the misses:
# two sheets whose shadowed paper is about as light as the desk, so not joined, and one on a
# light desk whose paper is not told from the desk at all.
FLOOR_DESK_NUMBERS = 0.6
FLOOR_DESK_SINGLE = 0.8

# Numbers on dark ruled paper, turned: 1/12 exact before lines were looked for at a slant (five
# photos had no digit found, one read as rows of 1s), 7/12 after (misses: one digit unsure,
# three read as other rows of digits, one with no digit found); 8/12 once paper spread over a
# quarter of the picture, against ink under a tenth, was no longer taken for light ink
# (``photos.SPREAD``: one photo's strips between its lines had been read as the digits).
# Digits right: 57/86 then; 77/86 once lines that are most of the ink were taken out when there
# are several of them (``photos.RULED``: thin digits on closely ruled paper), with 8/12 exact
# still (the misses now a digit or two unsure or wrong, where one photo had no digit found and
# one was read as stray rows).
FLOOR_TURNED_LINES = 0.5
FLOOR_TURNED_DIGITS = 0.8

# Measured with the bundled model before they were set: 281/300 single digits (4 not found,
# hidden by a hard shadow), 27/40 numbers exact and 266/294 of their digits; measured again
# later (the code as of the slanted ruled lines, and before it): 277/300 single digits (4 not
# found), the numbers as before. Most misses are pencil-thin strokes that photogen erodes
# into dots, which real pens do not draw.
FLOOR_SINGLE = 0.92
FLOOR_NUMBERS_EXACT = 0.6
FLOOR_NUMBER_DIGITS = 0.88


# -- image modes, sizes and what comes out -------------------------------------------------------


def pencil_digit(bits: int) -> Image.Image:
    """A faint pencil 7 on white, in 8 or 16 bits per pixel."""
    grey = np.full((120, 100), 1.0)
    grey[20:26, 20:80] = 0.78  # the bar
    for row in range(26, 100):
        col = 75 - int((row - 26) * 0.45)
        grey[row, col - 3 : col + 3] = 0.78
    if bits == 16:
        return Image.fromarray(np.uint16(grey * 65535))
    return Image.fromarray(np.uint8(grey * 255))


def test_a_16_bit_image_is_scaled_not_clipped():
    # Before: a 16-bit PNG was clipped at 255, and a pencil 7 became "no digit found".
    images = []
    for bits in (8, 16):
        out = io.BytesIO()
        pencil_digit(bits).save(out, format="PNG")
        images.append(load_digit(out.getvalue()))
    assert images[1].max() > 200
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() < 10


@pytest.mark.parametrize("mode", ["P", "CMYK", "LA", "RGBA-light-ink", "I", "F", "1"])
def test_every_mode_reads(mode):
    base = pencil_digit(8).point(lambda v: 0 if v < 230 else 255)
    if mode == "RGBA-light-ink":  # white strokes on a transparent canvas
        alpha = Image.eval(base, lambda v: 255 - v)
        image = Image.merge("RGBA", [Image.new("L", base.size, 255)] * 3 + [alpha])
    elif mode == "LA":
        image = Image.merge(
            "LA", [Image.new("L", base.size, 0), Image.eval(base, lambda v: 255 - v)]
        )
    elif mode in ("I", "F"):
        image = base.convert(mode)
    else:
        image = base.convert(mode)
    out = io.BytesIO()
    image.save(out, format="TIFF" if mode in ("I", "F", "CMYK") else "PNG")
    digit = load_digit(out.getvalue())
    reference = load_digit(png(base))
    assert np.abs(digit.astype(int) - reference.astype(int)).mean() < 15, mode


def test_a_huge_photo_is_shrunk_before_any_full_size_copy(tmp_path):
    # A 12-megapixel JPEG: no array of its full size is ever made (48 MB as float32).
    photo = tmp_path / "big.jpg"
    big = Image.new("RGB", (4000, 3000), (235, 230, 220))
    big.paste(Image.new("RGB", (600, 900), (30, 30, 40)), (1700, 1000))
    big.save(photo, quality=85)
    tracemalloc.start()
    picture = read_image(photo)
    find_digits(picture)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert max(picture.grey.shape) <= 1024 and picture.size == (4000, 3000)
    assert peak < 40 << 20, peak


def test_what_the_network_saw_is_saved_for_a_bad_photo(tmp_path, test_digits):
    photo = tmp_path / "two.png"
    photo.write_bytes(digit_photo(test_digits[0][1], seed=3))
    out = tmp_path / "seen"
    result = run("predict", str(photo), "--save-input", str(out))
    assert result.returncode in (0, 3), result.stderr
    seen = np.asarray(Image.open(out / "two.input.png"))
    ink = np.asarray(Image.open(out / "two.ink.png"))
    assert seen.shape == (28, 28) and seen.max() > 200
    assert ink.ndim == 2 and set(np.unique(ink)) <= {0, 255}
    np.testing.assert_array_equal(seen, find_digit(photo).image)


def test_unsure_is_said_in_the_text_the_json_and_the_exit_status(bundled, tmp_path, test_digits):
    path = tmp_path / "doubtful.npz"
    bundled.threshold = 1.0  # nothing is that sure: every reading is "unsure"
    bundled.save(path)
    bundled.threshold = Classifier.load(default_model()).threshold
    photo = tmp_path / "digit.png"
    photo.write_bytes(digit_photo(test_digits[0][0], seed=4))
    text = run("predict", str(path), str(photo))
    assert text.returncode == 3 and "unsure (maybe" in text.stdout
    answer = json.loads(run("predict", str(path), str(photo), "--json").stdout)
    assert answer["images"][0]["unsure"] and answer["images"][0]["prediction"] is None
    reading = run("read", "--model", str(path), str(photo), "--json")
    assert reading.returncode == 3 and json.loads(reading.stdout)["images"][0]["unsure"]


def test_calibration_fits_a_temperature_and_a_threshold(bundled, test_digits):
    images, labels = test_digits
    clf = Classifier.load(default_model())
    result = clf.calibrate(images[:2000], labels[:2000], precision=0.999)
    assert result["temperature"] > 0 and 0 <= result["threshold"] <= 1
    probs = clf.predict_proba(images[:2000])
    sure = probs.max(axis=1) >= clf.threshold
    assert (probs[sure].argmax(axis=1) == labels[:2000][sure]).mean() >= 0.999


def greypng(values: np.ndarray) -> bytes:
    """Grey values in [0, 1] as the bytes of an 8-bit PNG."""
    return png(Image.fromarray(np.uint8(np.clip(values * 255 + 0.5, 0, 255))))


def test_a_two_tone_brush_stroke_is_ink_all_through(bundled, test_digits):
    # A paint program's grey brush with a one-pixel darker rim, on flat grey paper (the levels
    # of a real such drawing made paler, 166/108/94): no paper noise, so Otsu split the ink
    # itself and kept only the rim (5% of the stroke or less); half the darkest ink is ink.
    images, labels = test_digits
    covers, right = [], 0
    for i in range(8):
        big = ndimage.zoom(images[i].astype(np.float32) / 255, 12, order=1)
        pen = ndimage.binary_dilation(big > 0.5, iterations=6)
        rim = pen & ~ndimage.binary_erosion(pen, iterations=1)
        values = np.full(pen.shape, 166 / 255)
        values[pen], values[rim] = 108 / 255, 94 / 255
        picture = greypng(np.pad(values, 40, constant_values=166 / 255))
        covers.append(ink_map(read_image(picture).grey).mask[40:-40, 40:-40][pen].mean())
        right += int(bundled.predict(load_digit(picture)[None])[0]) == labels[i]
    print("share of each stroke found as ink:", np.round(covers, 3), f"read right: {right}/8")
    assert min(covers) > 0.5 and np.median(covers) > 0.95 and right >= 7


def pen_thin(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit (28x28 uint8) as a pen-thin stroke 112 pixels a side: a mask."""
    big = ndimage.zoom(digit.astype(np.float32) / 255, 4, order=1)
    return ndimage.binary_erosion(big > 0.5, iterations=2)


def reads(clf: Classifier, values: np.ndarray) -> int | None:
    """The digit ``clf`` reads in a grey picture (values in [0, 1]); None if none is found."""
    try:
        return int(clf.predict(load_digit(greypng(values))[None])[0])
    except ImageError:
        return None


def generated_photos(test_digits, count: int):
    """The first ``count`` test digits as generated photos: (grey values, label)."""
    images, labels = test_digits
    for i in range(count):
        yield read_image(digit_photo(images[i], seed=i)).grey, labels[i]


def test_a_noisy_photo_is_smoothed_before_its_ink_is_found(bundled, test_digits):
    # Pixel noise of 0.08 over generated photos (a dim webcam frame): read 58 of 60 right
    # when measured, 35 without the smoothing, 60 since hard shadows are told from ink. A
    # clean photo is left as it is.
    rng = np.random.default_rng(0)
    right = 0
    for grey, label in generated_photos(test_digits, 60):
        assert denoised(grey) is grey and noise_level(grey) <= NOISE
        noisy = np.clip(grey + rng.normal(0, 0.08, grey.shape), 0, 1)
        assert noise_level(noisy) > 2 * NOISE
        right += reads(bundled, noisy) == label  # not found: a miss
    print(f"noisy generated photos: {right}/60 read right")
    assert right >= 54


def test_a_digit_on_squared_paper_is_read_without_the_grid(bundled, test_digits):
    # A pen-thin digit across a few squares of paper whose grid is as dark as the ink, the grid
    # filling the picture: a grid is one connected piece of ink, so it used to count as one
    # line, not the many that mark ruled paper, and it stayed ink while the digit was under a
    # tenth of the ink (read as 0s and 8s). Level and upright lines are now counted apart.
    images, labels = test_digits
    right = 0
    for i in range(10):
        values = np.full((400, 400), 0.95)
        values[::25] = values[:, ::25] = values[1::25] = values[:, 1::25] = 0.3
        values[144:256, 144:256][pen_thin(images[i])] = 0.15
        right += reads(bundled, values) == labels[i]
    print(f"digits on a dark grid: {right}/10 read right")
    assert right >= 9


def numbers_on_grid(clf: Classifier, test_digits, line: int, below: str) -> int:
    """How many of 8 generated numbers (5 digits each) ``on_grid`` ``clf`` reads exactly."""
    exact = 0
    for seed in range(8):
        digits, number = five_digits(test_digits, seed)
        rows = read_number(clf, on_grid(digits, seed, line, below)).rows
        exact += [row.text for row in rows] == [number]
    return exact


def test_grid_lines_that_end_at_the_sheets_edge_are_no_ink(bundled, test_digits):
    """Squared paper whose sheet ends on a desk a fifth of the way up the frame, its grid a
    little before that: its upright lines run across the sheet, not across 90% of the
    picture, and are lines all the same (the desk's grain keeps it from being painted over as
    paper). Measured: 0 of 8 read exactly when lines had to run across 90% of the picture
    (before, and with every other change of this test's commit), 7 now."""
    exact = numbers_on_grid(bundled, test_digits, line=2, below="desk")
    print(f"numbers on squared paper ending on a desk: {exact}/8 exact")
    assert exact >= 6


def test_strokes_across_and_along_thick_grid_lines_stay_ink(bundled, test_digits):
    """A close-up of squared paper, its lines 7 pixels wide: a stroke across a line keeps the
    line's pixels between its two sides (the gap is the line's own thickness, not a fixed
    9 pixels), and a stroke drawn along a line, darker than it, is ink. Measured: 0 of 8 read
    exactly before, 1 with every other change of this test's commit but the ink along lines,
    7 now."""
    exact = numbers_on_grid(bundled, test_digits, line=7, below="paper")
    print(f"numbers across thick grid lines: {exact}/8 exact")
    assert exact >= 6


def test_grain_in_a_shadow_on_squared_paper_is_no_digits(bundled, test_digits):
    """Thick grid lines pulled the ink threshold down into the blotchy grain of a phone's
    shadow, whose pieces were read as extra rows; the threshold is set again without the
    lines. Measured: 0 of 8 read exactly before, 0 with every other change of this test's
    commit but that one, 7 now."""
    exact = numbers_on_grid(bundled, test_digits, line=7, below="shadow")
    print(f"numbers on squared paper with a grainy shadow: {exact}/8 exact")
    assert exact >= 5


def test_a_hard_shadow_across_the_paper_leaves_no_ink_along_its_edge(bundled, test_digits):
    # One side of a straight edge through the middle of generated photos, at a random angle,
    # gets 45% of the light (as benchmarks/realdigits_changed.py does to real ones). The
    # paper's level, smoothed, spread the lit level into the shadow, and a band along its
    # edge became ink joined to the digit: 14 of 30 read right before, 27 then (26 now), 29
    # with no shadow.
    rng = np.random.default_rng(0)
    right = 0
    for grey, label in generated_photos(test_digits, 30):
        middle = (grey.shape[0] / 2, grey.shape[1] / 2)
        right += reads(bundled, hard_shadow(grey, rng.uniform(0, 2 * np.pi), middle, 0.45)) == label
    print(f"generated photos with a hard shadow across: {right}/30 read right")
    assert right >= 24


def hard_shadow(grey: np.ndarray, angle: float, point: tuple[float, float], light: float):
    """``grey`` with ``light`` of the light on one side of a straight edge through ``point``
    (row, column), whose normal points at ``angle`` (radians, from the rows' direction)."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w]
    beyond = np.cos(angle) * (xx - point[1]) + np.sin(angle) * (yy - point[0]) > 0
    return np.where(beyond, light * grey, grey)


def test_paper_that_fills_the_picture_under_a_deep_shadow_is_relit(bundled, test_digits):
    # A hard shadow that leaves a quarter of the light (a phone held over the paper), its edge
    # through a random point of the middle 40% at a random angle, over generated photos whose
    # paper fills the frame. The lit part was taken for a sheet on a desk, and the shadowed
    # paper, judged bare by its grey levels (its ink is dim too), painted over as desk, or
    # left as it was, where the lit paper's edge could pass for light ink. It is relit as
    # part of the sheet now (``photos._shadow_across``, ``photos._relit``). Read exactly: 4
    # of 12 numbers before, 7 now, 8 with no shadow; single digits 23 of 30, 26, 30 (three
    # of the misses are under two shadows: the photo's own and this one).
    images, labels = test_digits
    rng = np.random.default_rng(0)

    def shaded(grey: np.ndarray) -> np.ndarray:
        h, w = grey.shape
        point = (h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7))
        return hard_shadow(grey, rng.uniform(0, 2 * np.pi), point, 0.25)

    exact = 0
    for photo, expected in random_numbers(images, labels, 12, seed=9, first_photo=3000):
        try:
            reading = read_number(bundled, greypng(shaded(read_image(photo).grey)))
        except ImageError:
            continue
        exact += [row.text for row in reading.rows] == expected
    right = sum(
        reads(bundled, shaded(grey)) == label for grey, label in generated_photos(test_digits, 30)
    )
    print(f"under a deep shadow: numbers {exact}/12 exact, single digits {right}/30")
    assert exact >= 7 and right >= 24


def cropped_numbers(test_digits, count: int = 12):
    """Generated photos cropped to a six-digit number, three to four times as wide as high, on
    plain paper: (seed, grey values, the number) for seeds 0, 1, ..."""
    images, labels = test_digits
    for k in range(count):
        index = range(6 * k, 6 * k + 6)
        photo = number_photo([[images[i] for i in index]], seed=k, lines="none")
        yield k, read_image(photo).grey, "".join(str(labels[i]) for i in index)


def read_exactly(clf: Classifier, grey: np.ndarray, number: str) -> bool:
    """Whether ``clf`` reads a grey picture (values in [0, 1]) as one row, ``number``."""
    return [row.text for row in read_number(clf, greypng(grey)).rows] == [number]


def test_a_hard_shadow_across_a_photo_cropped_to_its_number_leaves_no_ink_along_its_edge(
    bundled, test_digits
):
    # Half of each picture under a hard shadow (45% of the light) at a random angle. A
    # shadow's edge was told from ink only in pictures three background windows high (the
    # window is 12% of the longer side): a strip is two to three, and its shadow's edge became
    # a band of "ink" that took the digits beside it. Read exactly: 1 of 12 before, 8 now, 8
    # with no shadow.
    rng = np.random.default_rng(0)
    exact = 0
    for _, grey, number in cropped_numbers(test_digits):
        h, w = grey.shape
        yy, xx = np.mgrid[0:h, 0:w]
        angle = rng.uniform(0, 2 * np.pi)
        across = np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)
        shaded = np.where(across < np.median(across), 0.45 * grey, grey)
        exact += read_exactly(bundled, shaded, number)
    print(f"numbers cropped tight with a hard shadow across: {exact}/12 exact")
    assert exact >= 7


def test_ruled_lines_fainter_than_the_ink_threshold_are_found_as_lines(bundled, test_digits):
    # Ruled: level lines a pixel or two wide (1/150 of the height), a fifth of the height
    # apart, taking 30% of the light off (as benchmarks/realdigits_changed.py rules real
    # photos). The lines were under the ink's threshold but over its hysteresis floor
    # (``FAINT``): only their stretches that touch a digit were ink, no line ran across the
    # picture, and the stretches were read with the digits ("22?047" for 721041). Lines are
    # looked for above the floor. Read exactly: 4 of 12 before, 8 now, 8 with no lines.
    exact = 0
    for k, grey, number in cropped_numbers(test_digits):
        h = len(grey)
        width, step = max(1, round(h / 150)), h / 5
        light = np.ones_like(grey)
        for top in np.arange(np.random.default_rng(k).uniform(0, step), h, step).astype(int):
            light[top : top + width] = 0.7
        exact += read_exactly(bundled, grey * light, number)
    print(f"numbers cropped tight on faint ruled lines: {exact}/12 exact")
    assert exact >= 7


def test_a_clean_drawing_mostly_in_shadow_is_still_dark_ink_on_light_paper(bundled, test_digits):
    # Black marker on white, most of the border under a shadow with 45% of the light: ink and
    # paper stand out equally either way round, and the border's median (0.45) was under the
    # middle grey, so the paper was taken for a dark board (7 of 10 dark ink before).
    images, labels = test_digits
    yy, xx = np.mgrid[0:300, 0:300]
    right = dark = 0
    for i in range(10):
        big = ndimage.zoom(images[i].astype(np.float32) / 255, 8, order=1)
        values = np.ones((300, 300))
        values[38:262, 38:262][big > 0.5] = 0.0
        values[xx + 0.3 * yy > 120] *= 0.45
        dark += not ink_map(values).light_on_dark
        right += reads(bundled, values) == labels[i]
    print(f"clean drawings mostly in shadow: {dark}/10 dark ink, {right}/10 read right")
    assert dark == 10 and right >= 9


def test_a_streak_of_light_across_a_shadowed_sheet_is_no_light_ink(bundled, test_digits):
    # The sheet under a shadow (45% of the light) but for a streak of full light across it,
    # between a hand and a phone. In grey levels the streak stands out from the shadowed paper
    # (0.9 against 0.41) more than the ink does (0.07 against 0.41), so the streak was taken
    # for light ink on a dark board and no number read (0 of 6). As ratios of light the ink
    # stands out more (``photos.RATIO_FLOOR``). (In benchmarks/realdigits_changed.py a hard
    # shadow over most of 745382 made the lit paper beside its bold digits the "light ink".)
    images, labels = test_digits
    exact = light = 0
    for k in range(6):
        index = list(range(5 * k, 5 * k + 5))
        values = np.pad(number_row(images, index), ((0, 300), (0, 0)), constant_values=0.9)
        h, w = values.shape
        yy, xx = np.mgrid[0:h, 0:w]
        streak = np.abs(0.5 * (xx - 0.5 * w) + yy - 0.8 * h) < 30
        values = np.where(streak, values, 0.45 * values)
        light += ink_map(values).light_on_dark
        exact += read_exactly(bundled, values, "".join(str(labels[i]) for i in index))
    print(f"numbers on a shadowed sheet with a streak of light: {exact}/6 exact, {light} light ink")
    assert light == 0 and exact >= 5


def number_row(images: np.ndarray, index: list[int]) -> np.ndarray:
    """Pen-thin test digits side by side on white paper, 140 pixels apart: grey values."""
    values = np.full((300, 140 * len(index) + 100), 0.9)
    for k, i in enumerate(index):
        values[60:172, 64 + 140 * k : 176 + 140 * k][pen_thin(images[i])] = 0.15
    return values


def test_a_dark_object_inside_the_picture_does_not_make_the_digits_specks(bundled, test_digits):
    # A dark bar lying on the sheet below a number (a pen, a phone's edge), clear of the
    # picture's edges: specks were judged against the largest piece, this one, so the 1 (a
    # third of a hundredth of its ink) was dropped, and the bar set the size of the number's
    # digits ("20" was read). A filled region is judged no digit (``photos.SOLID``).
    images, labels = test_digits
    index = [0, 1, 2, 3, 4]
    values = np.pad(number_row(images, index), ((0, 400), (0, 200)), constant_values=0.9)
    values[420:520, 60:960] = 0.1
    rows = [row.text for row in read_number(bundled, greypng(values)).rows]
    assert rows == ["".join(str(labels[i]) for i in index)]


def test_dust_on_the_paper_does_not_set_the_size_of_a_number_s_digits(bundled, test_digits):
    # Forty specks of dust, each too big to be noise: the digits' typical height was the
    # median piece's, a speck's, so the digits were "far taller than the typical one", dropped.
    images, labels = test_digits
    index = [0, 1, 2, 3, 4]
    values = number_row(images, index)
    rng = np.random.default_rng(0)
    for y, x in rng.integers((200, 10), (290, values.shape[1] - 10), (40, 2)):
        values[y : y + 5, x : x + 5] = 0.2
    rows = [row.text for row in read_number(bundled, greypng(values)).rows]
    assert rows == ["".join(str(labels[i]) for i in index)]


def test_a_shadow_that_meets_the_picture_s_edge_on_a_slant_is_no_digit(bundled, test_digits):
    # A phone's shadow over the bottom of the sheet, its edge slanting into the picture's
    # bottom edge: the closing of the picture as reflected there made a wedge, filled it with
    # the lit level, and left a stroke of "ink" along the edge that was read as a 1 below.
    # (Kept sharp there, the shadow's level is now closed with the picture padded with its
    # own edge; before the shadow was kept sharp, its edge was one wide band, dropped.)
    images, labels = test_digits
    index = [5, 6, 7, 8]
    number = number_row(images, index)
    h, w = number.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for slant in [0.3, 1.0, 2.0]:
        values = number * np.where((yy > 230) & (xx > 150 - slant * (yy - 230)), 0.3, 1.0)
        rows = [row.text for row in read_number(bundled, greypng(values)).rows]
        assert rows == ["".join(str(labels[i]) for i in index)], slant


def test_blank_and_unreadable_pictures(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 200), 240).save(blank)
    with pytest.raises(ImageError, match="no digit"):
        load_digit(blank)
    one_clear_line(run("read", str(blank)), "no digits found")


def test_a_scanned_pdf_is_read_page_by_page(bundled, test_digits, tmp_path):
    """A scan saved as a PDF: a page is rendered at the working size and read as a photo is
    (the first by default, any by its index); the command line reads every page, says which
    each reading is from, is one clear line for a blank page, and boxes each page apart. A page
    that claims to be 106 inches wide is rendered at the working size too, never at its own; a
    broken PDF, or a page it does not have, is one line."""
    images, labels = test_digits

    def sheet(number: str, seed: int) -> Image.Image:
        digits = [images[np.flatnonzero(labels == int(d))[3]] for d in number]
        return Image.open(io.BytesIO(number_photo([digits], seed=seed))).convert("RGB")

    scan, second = sheet("31415", 14), sheet("2718", 15)
    path = tmp_path / "scan.pdf"
    blank = Image.new("RGB", scan.size, "white")
    scan.save(path, format="PDF", resolution=150, save_all=True, append_images=[second, blank])
    assert page_count(path) == 3 and page_count(path.read_bytes()) == 3
    assert [row.text for row in read_number(bundled, path).rows] == ["31415"]
    page_two = read_image(path, page=1)
    assert page_two.pages == 3  # the count comes with the page, from the one parse
    assert [row.text for row in read_number(bundled, page_two).rows] == ["2718"]
    with pytest.raises(ImageError, match="a PDF of 3 page.s. has no page 4"):
        read_image(path, page=3)
    png = tmp_path / "scan.png"
    scan.save(png)
    assert page_count(png) == 1 and read_image(png).pages == 1
    with pytest.raises(ImageError, match="not a PDF, so it has no page 2"):
        read_image(png, page=1)
    with open_image(path, page=1) as shown:  # what --annotate draws on: the page as read
        assert shown.size == page_two.size

    out = tmp_path / "boxed.png"
    result = run("read", str(path), "--annotate", str(out))
    assert result.stdout.count(f"{path} (page ") == 2, result.stdout
    assert "(page 1):\n  31415" in result.stdout and "(page 2):\n  2718" in result.stdout
    one_clear_line(result, f"{path} (page 3): no digits found")
    assert Image.open(out).size[0] == Image.open(tmp_path / "boxed-page2.png").size[0] > 0
    predicted = json.loads(run("predict", str(path), "--json").stdout)["images"]
    assert [(p["image"], p["page"]) for p in predicted] == [(str(path), 1), (str(path), 2)]
    huge = io.BytesIO()
    scan.save(huge, format="PDF", resolution=4)  # 423 pixels at 4 per inch
    assert max(read_image(huge.getvalue()).size) == WORK_SIDE  # not 7,600 pixels at 72 dpi
    assert [row.text for row in read_number(bundled, huge.getvalue()).rows] == ["31415"]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(path.read_bytes()[:300])
    one_clear_line(run("read", str(broken)), "broken.pdf: not a readable PDF")


# -- the real development set (measured, never trained on) -------------------------------------


@pytest.fixture(scope="module")
def dev() -> Path:
    if not (DEV / "images").is_dir():
        pytest.skip(f"the real-photo development set is not at {DEV}")
    return DEV


def test_real_single_digits(bundled, dev):
    results: dict[str, list[int]] = {}
    for path in sorted((dev / "images").iterdir()):
        label, source = path.stem.split("_")[:2]
        guess = str(bundled.predict(load_digit(path)[None])[0])
        results.setdefault(source, []).append(guess == label)
    right = sum(sum(v) for v in results.values())
    total = sum(len(v) for v in results.values())
    print(f"real single digits: {right}/{total}")
    assert right / total >= 0.97
    assert all(sum(v) / len(v) >= 0.7 for v in results.values())


def test_real_whole_numbers(bundled, dev):
    exact = 0
    for path in sorted((dev / "multi").iterdir()):
        expected = path.stem.split("_")[0].split("-")
        exact += [row.text for row in read_number(bundled, path).rows] == expected
    assert exact >= 10
