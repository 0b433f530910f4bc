"""Draw the example digit images used in the README (synthetic handwriting, no MNIST data).

python docs/examples/make_examples.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
rng = np.random.default_rng(1)


def paper(size, colour):
    noise = rng.normal(0, 6, (size[1], size[0], 3))
    base = np.clip(np.array(colour, float) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(base)


# A seven in black marker on white paper, off-centre on a large photo.
img = paper((640, 480), (246, 244, 238))
d = ImageDraw.Draw(img)
d.line(
    [(330, 90), (470, 96), (455, 130), (400, 260), (372, 380)],
    fill=(25, 25, 30),
    width=22,
    joint="curve",
)
img.filter(ImageFilter.GaussianBlur(1.2)).rotate(-4, fillcolor=(246, 244, 238)).save(
    HERE / "seven.png"
)

# A three in blue ballpoint on cream paper, saved as JPEG.
img = paper((300, 360), (250, 242, 215))
d = ImageDraw.Draw(img)
d.arc([70, 40, 230, 180], start=200, end=90, fill=(30, 50, 160), width=14)
d.arc([60, 160, 240, 320], start=270, end=160, fill=(30, 50, 160), width=14)
img.filter(ImageFilter.GaussianBlur(0.8)).save(HERE / "three.jpg", quality=80)

# A four in white chalk on a blackboard.
img = paper((400, 400), (40, 52, 46))
d = ImageDraw.Draw(img)
d.line([(230, 60), (110, 250), (300, 250)], fill=(235, 235, 225), width=20, joint="curve")
d.line([(240, 140), (245, 350)], fill=(235, 235, 225), width=20)
img.filter(ImageFilter.GaussianBlur(1.5)).save(HERE / "four.png")

# A whole number, 2026, in blue ballpoint on ruled paper, for `scratchcnn read`.
img = paper((760, 300), (248, 247, 240))
d = ImageDraw.Draw(img)
for y in range(30, 300, 48):
    d.line([(0, y), (760, y)], fill=(150, 175, 215), width=2)
ink = (35, 55, 150)
for left in (60, 380):  # the two 2s
    d.arc([left, 60, left + 120, 150], start=180, end=40, fill=ink, width=13)
    d.line(
        [(left + 110, 120), (left + 5, 235), (left + 130, 232)], fill=ink, width=13, joint="curve"
    )
d.ellipse([225, 62, 335, 236], outline=ink, width=13)  # 0
d.arc([565, 62, 745, 330], start=182, end=268, fill=ink, width=13)  # 6: the stroke down
d.ellipse([566, 140, 680, 238], outline=ink, width=13)  # and its loop
img.filter(ImageFilter.GaussianBlur(0.9)).rotate(2, fillcolor=(248, 247, 240)).save(
    HERE / "number.jpg", quality=85
)
