"""The code base stays ruff clean (lint and format), and its dependencies run one way (the
import-linter contracts in pyproject.toml), checked with the rest of the suite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command):
    if not Path(RUFF).exists():
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [RUFF, *command, "src", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts():
    # nn imports nothing from fast, training, app or data; fast nothing from training or app;
    # the engine no tqdm, matplotlib, Pillow or frameworks; the command line and the server go
    # through the application's public API.
    if not Path(LINT_IMPORTS).exists():
        pytest.skip("import-linter not installed (pip install -e '.[test]')")
    result = subprocess.run([LINT_IMPORTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
