"""How well scratchcnn reads real photos and drawings: the development set in
``../shared/data/realdigits-dev`` (never copied into the repository, never trained on).

    python benchmarks/realdigits.py [--model MODEL] [--dev DIR] [--json OUT]

Single digits (``images/``): the share read right, overall, per source and per style (photo
or drawing, from MANIFEST.tsv), and each source's worst case. Whole numbers (``multi/``): the
numbers read exactly and the share of digits right. Timing and peak memory of ``read`` on the
largest photo. Everything printed is also written to ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

from scratchcnn import ScratchCNNError
from scratchcnn.app import Classifier, default_model
from scratchcnn.app.photos import load_digit
from scratchcnn.app.reader import read_number
from scratchcnn.fileio import atomic_write

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "realdigits-dev"


def single_digits(clf: Classifier, dev: Path) -> dict:
    styles = {}
    with open(dev / "MANIFEST.tsv") as manifest:
        for row in csv.DictReader(manifest, delimiter="\t"):
            styles[Path(row["file"]).name] = row["style"]
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_style: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wrong = []
    for path in sorted((dev / "images").iterdir()):
        label, source = path.stem.split("_")[0], path.stem.split("_")[1]
        try:
            guess = clf.classes[int(clf.predict(load_digit(path)[None])[0])]
        except ScratchCNNError as err:
            guess = f"error: {err}"
        right = guess == label
        for table, key in ((by_source, source), (by_style, styles.get(path.name, "?"))):
            table[key][0] += right
            table[key][1] += 1
        if not right:
            wrong.append(f"{path.name}: {guess}")
    total = sum(r for r, _ in by_source.values()), sum(n for _, n in by_source.values())
    return {
        "right": total[0],
        "images": total[1],
        "accuracy": total[0] / total[1],
        "by_source": {k: {"right": r, "images": n} for k, (r, n) in sorted(by_source.items())},
        "by_style": {k: {"right": r, "images": n} for k, (r, n) in sorted(by_style.items())},
        "worst_source": min(by_source.items(), key=lambda kv: kv[1][0] / kv[1][1])[0],
        "wrong": wrong,
    }


def whole_numbers(clf: Classifier, dev: Path) -> dict:
    results, digits_right, digits_total = [], 0, 0
    for path in sorted((dev / "multi").iterdir()):
        expected = path.stem.split("_")[0].split("-")
        try:
            reading = read_number(clf, path)
            got = [row.text for row in reading.rows]
        except ScratchCNNError as err:
            got = [f"error: {err}"]
        exact = got == expected
        for want, have in zip(expected, got + [""] * len(expected), strict=False):
            digits_right += sum(a == b for a, b in zip(want, have, strict=False))
            digits_total += len(want)
        results.append({"file": path.name, "expected": expected, "read": got, "exact": exact})
    return {
        "exact": sum(r["exact"] for r in results),
        "numbers": len(results),
        "digits_right": digits_right,
        "digits": digits_total,
        "digit_accuracy": digits_right / max(digits_total, 1),
        "results": results,
    }


def timing(clf: Classifier, dev: Path) -> dict:
    """``read`` on the largest photo of the set: seconds (best of 3) and the process's peak
    resident memory afterwards."""
    largest = max((dev / "multi").iterdir(), key=lambda p: p.stat().st_size)
    from PIL import Image

    with Image.open(largest) as img:
        pixels = img.width * img.height
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        read_number(clf, largest)
        seconds.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "file": largest.name,
        "megapixels": pixels / 1e6,
        "seconds": min(seconds),
        "peak_rss_mib": peak_mib,
    }


def arguments(description: str) -> argparse.ArgumentParser:
    """The options of every script on the development set: ``--model`` and ``--dev``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--dev", default=str(DEV), help="the development set's folder")
    return parser


def model_and_set(args: argparse.Namespace) -> tuple[Classifier, Path] | None:
    """The model and the development set's folder; None, said on stderr, without the set."""
    dev = Path(args.dev)
    if not (dev / "images").is_dir():
        print(f"no development set at {dev}", file=sys.stderr)
        return None
    return Classifier.load(args.model or default_model()), dev


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    if (loaded := model_and_set(args)) is None:
        return 1
    clf, dev = loaded
    report = {"model": args.model or "bundled", "single": single_digits(clf, dev)}
    single = report["single"]
    print(f"single digits: {single['right']}/{single['images']} ({100 * single['accuracy']:.1f}%)")
    for style, counts in single["by_style"].items():
        print(f"  {style}: {counts['right']}/{counts['images']}")
    print(
        "  by source: "
        + ", ".join(f"{k} {v['right']}/{v['images']}" for k, v in single["by_source"].items())
    )
    report["multi"] = whole_numbers(clf, dev)
    multi = report["multi"]
    print(
        f"whole numbers: {multi['exact']}/{multi['numbers']} exact, digits "
        f"{multi['digits_right']}/{multi['digits']} ({100 * multi['digit_accuracy']:.1f}%)"
    )
    for result in multi["results"]:
        mark = "ok " if result["exact"] else "BAD"
        print(f"  {mark} {result['file']}: read {'-'.join(result['read'])}")
    report["timing"] = timing(clf, dev)
    t = report["timing"]
    print(
        f"read on {t['file']} ({t['megapixels']:.1f} MP): {t['seconds']:.3f} s, "
        f"peak RSS {t['peak_rss_mib']:.0f} MiB"
    )
    if args.json:
        text = json.dumps(report, indent=1).encode()
        atomic_write(args.json, lambda out: out.write(text))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
