"""Checksummed downloads: stream to a temporary file beside the target, verify, then rename
(``scratchcnn.fileio.atomic_write``).

A failed, cut-off or corrupt download leaves nothing behind; a file is only ever visible under
its real name once its content matches the expected MD5.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import DataError
from ..fileio import atomic_write

# progress(bytes_so_far, total_bytes_or_None); the command line hands in a tqdm bar.
Progress = Callable[[int, "int | None"], None]
CHUNK = 1 << 16


def content_md5(path: Path) -> str:
    """MD5 of a file's content, uncompressed when it is gzip (mirrors recompress the .gz)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if compressed else raw
        try:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip data ({err})") from None
    return digest.hexdigest()


def fetch(
    url: str,
    dest: Path,
    md5: str,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> None:
    """Download ``url`` to ``dest`` if and only if its content's MD5 is ``md5``."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"refusing to download {url!r}: only http(s) URLs are allowed")

    def stream(out) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "scratchcnn"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            if total is not None and done != total:
                raise DataError(f"connection closed after {done:,} of {total:,} bytes")

    def check(tmp: Path) -> None:
        got = content_md5(tmp)
        if got != md5:
            raise DataError(f"checksum mismatch: content MD5 {got}, expected {md5}")

    atomic_write(dest, stream, verify=check)


def describe(err: BaseException) -> str:
    """One line for a failed attempt."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"cannot connect ({err.reason})"
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial):,} bytes of a response"
    if isinstance(err, TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


def fetch_from_mirrors(
    filename: str,
    mirrors: Sequence[str],
    dest: Path,
    md5: str,
    timeout: float = 30.0,
    retries: int = 1,
    progress: Progress | None = None,
) -> list[str]:
    """Try each mirror in order (each ``1 + retries`` times, except for HTTP 4xx answers).

    Returns the list of failures before the one that worked; raises :class:`DataError` listing
    every attempt when none did.
    """
    failures: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(1 + retries):
            try:
                fetch(url, dest, md5, timeout=timeout, progress=progress)
                return failures
            except (DataError, OSError, ValueError, http.client.HTTPException) as err:
                # A connection cut half way surfaces as http.client.IncompleteRead.
                failures.append(f"{url}: {describe(err)}")
                permanent = isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500
                if permanent or attempt == retries:
                    break
                time.sleep(0.5 * (attempt + 1))
    raise DataError(
        f"could not download {filename}; tried:\n  " + "\n  ".join(failures or ["(no mirrors)"])
    )
