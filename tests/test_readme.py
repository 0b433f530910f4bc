"""The README (#19) is short, names only files that exist, and shows real output: the training
log it quotes is a file's, the commands it shows print what it says, and its Python runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_it_is_short():
    assert len(README.splitlines()) <= 200


@pytest.mark.parametrize(
    "document", ["README.md", "docs/performance.md", "docs/reliability.md", "docs/results.md"]
)
def test_every_path_it_names_exists(document):
    # Quoted output is left out: it names the files a run wrote, such as model files that are
    # not kept in git; the tests below check the quoted output itself.
    text = re.sub(r"```text\n.*?```", "", (REPO / document).read_text(), flags=re.S)
    paths = re.findall(r"(?<![\w/.])((?:src|docs|tests|benchmarks|\.ci)/[\w./-]*\w)", text)
    assert paths
    missing = sorted({p for p in paths if not (REPO / p).exists() and "SEED" not in p})
    assert missing == []


def test_the_training_log_it_quotes_is_the_file():
    block = next(b for b in blocks("text") if b.startswith("$ scratchcnn train"))
    log = (REPO / "docs/results/recipes/quick-mnist-s0.log").read_text()
    quoted = block.splitlines()[1:]
    assert len(quoted) >= 7
    for line in quoted:
        assert line in log.splitlines(), line


@pytest.mark.parametrize("command", ["predict", "read"])
def test_the_commands_it_shows_print_what_it_says(command, tmp_path):
    lines = next(b for b in blocks("text") if f"$ scratchcnn {command} " in b).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"$ scratchcnn {command} "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("$")), len(lines))
    args, shown = lines[start].split()[2:], lines[start + 1 : end]
    assert shown
    if "--annotate" in args:  # drawn into a scratch folder, not over the README's picture
        args[args.index("--annotate") + 1] = str(tmp_path / "read.png")
        shown = [line for line in shown if not line.startswith("Annotated:")]
    result = subprocess.run(
        [sys.executable, "-m", "scratchcnn", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=cli_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if not line.startswith("Annotated:")]
    assert printed == shown


@pytest.mark.slow
def test_its_python_runs(mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCHCNN_DATA", str(mnist_dir))
    monkeypatch.setenv("SCRATCHCNN_MIRRORS", "http://127.0.0.1:9/")
    code = blocks("python")
    assert len(code) == 2
    namespace: dict = {}
    for block in code:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["value"] < 1.0  # 200 plain steps of the engine
    assert namespace["clf"].evaluate(namespace["test_x"], namespace["test_y"])["accuracy"] > 0.98
    assert namespace["probabilities"].shape == (5, 10)
    assert os.path.getsize("model.npz") > 0
