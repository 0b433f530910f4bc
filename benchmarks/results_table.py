"""The accuracy table of docs/results.md, from the logs ``scratchcnn train`` wrote.

    python benchmarks/results_table.py [docs/results/recipes]

Reads every ``RECIPE-DATASET-sSEED.log`` in the folder (one ``scratchcnn train ...`` each, see
``benchmarks/run_recipes.sh``), takes from each its net, dataset, seed, test accuracy and
training time as ``train`` printed them, and prints one Markdown row per recipe and dataset:
the mean over seeds, the lowest and highest, and the mean time. Writes the same to
``summary.json`` in the folder.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAME = re.compile(r"^([a-z]+)-")  # the recipe, as run_recipes.sh names the log
HEADER = re.compile(
    r"^Training (\S+)(?: \(recipe \S+\))? on [\d,]+ (\S+) images .* seed (\d+)$", re.M
)
ACCURACY = re.compile(r"^Test accuracy: ([\d.]+)% on", re.M)
TIME = re.compile(r"^Training time: ([\d.]+) s\.", re.M)


def parse(path: Path) -> dict | None:
    text = path.read_text()
    header, accuracy, seconds = HEADER.search(text), ACCURACY.search(text), TIME.search(text)
    if not (header and accuracy and seconds):
        return None  # a run that did not finish
    arch, dataset, seed = header.groups()
    return {
        "log": path.name,
        "recipe": NAME.match(path.name).group(1),
        "arch": arch,
        "dataset": dataset,
        "seed": int(seed),
        "test_accuracy": float(accuracy.group(1)),
        "seconds": float(seconds.group(1)),
    }


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/recipes")
    runs = [run for path in sorted(folder.glob("*.log")) if (run := parse(path))]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["recipe"], run["dataset"])].append(run)
    rows = []
    print(
        "| recipe | net | dataset | seeds | test accuracy: mean (lowest - highest) "
        "| training time: mean (longest) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for (recipe, dataset), group in sorted(groups.items()):
        accs = [r["test_accuracy"] for r in group]
        secs = [r["seconds"] for r in group]
        row = {
            "recipe": recipe,
            "dataset": dataset,
            "seeds": sorted(r["seed"] for r in group),
            "mean": math.floor(statistics.mean(accs) * 1000) / 1000,  # never rounded up
            "lowest": min(accs),
            "highest": max(accs),
            "mean_seconds": statistics.mean(secs),
            "longest_seconds": max(secs),
            "runs": group,
        }
        rows.append(row)
        several = len(group) > 1
        spread = f" ({min(accs):.2f} - {max(accs):.2f})" if several else ""
        longest = f" ({max(secs):,.1f} s)" if several else ""
        mean_time = math.ceil(row["mean_seconds"] * 10) / 10  # never rounded down
        print(
            f"| `{recipe}` | {group[0]['arch']} | {dataset} | {len(group)} | "
            f"{row['mean']:.3f}%{spread} | {mean_time:,.1f} s{longest} |"
        )
    (folder / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
