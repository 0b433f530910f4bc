"""Helpers shared by the tests that run the ``scratchcnn`` command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def run(
    *args: str, env_extra: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scratchcnn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env_extra),
    )


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("SCRATCHCNN_DATA", None)
    # Never reach for the internet from tests: a dead local port fails at once.
    env["SCRATCHCNN_MIRRORS"] = "http://127.0.0.1:9/"
    env.update(extra or {})
    return env


def one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextmanager
def serving(httpd) -> Iterator[int]:
    """Serve ``httpd`` from a daemon thread; yields its port, and shuts it down after."""
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
