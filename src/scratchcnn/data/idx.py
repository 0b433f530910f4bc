"""A strict reader for the IDX format of the MNIST files (raw or gzip-compressed).

Layout, all big-endian:

    bytes 0-1   0x00 0x00
    byte  2     type code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
                0x0E float64
    byte  3     number of dimensions D
    4 * D       the size of each dimension, uint32
    then        prod(sizes) items of that type, row-major, and nothing after them

Anything else - a wrong magic, an unknown type, a short or long payload, a broken gzip
stream - raises :class:`DataError` naming the file. The payload size is checked against the
bytes actually present, read in bounded chunks, so a lying header cannot make us allocate more
than the file really holds.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
MAX_PAYLOAD = 1 << 31  # 2 GiB: far above any IDX dataset, far below a hostile header's 2^96
CHUNK = 1 << 20


def _read_exactly(stream: io.BufferedIOBase, size: int, path: Path, what: str) -> bytes:
    """Read ``size`` bytes in bounded chunks; fewer means the file is truncated."""
    parts, remaining = [], size
    while remaining:
        chunk = stream.read(min(CHUNK, remaining))
        if not chunk:
            raise DataError(
                f"{path}: truncated {what}: expected {size:,} bytes, found {size - remaining:,}"
            )
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _parse(stream: io.BufferedIOBase, path: Path) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(magic)} byte(s) of header)")
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic {magic.hex()} does not start 0000)")
    code, ndim = magic[2], magic[3]
    if code not in TYPE_CODES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares no dimensions")
    shape = tuple(
        int(s) for s in np.frombuffer(_read_exactly(stream, 4 * ndim, path, "header"), ">u4")
    )
    dtype = TYPE_CODES[code]
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_PAYLOAD:
        raise DataError(
            f"{path}: IDX header declares {nbytes:,} bytes of data, more than a dataset"
        )
    payload = _read_exactly(stream, nbytes, path, "data")
    if stream.read(1):
        raise DataError(f"{path}: trailing bytes after the {nbytes:,} bytes of data")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or raw) into an array of the declared dtype and shape."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _parse(raw, path)
            with gzip.GzipFile(fileobj=raw) as stream:
                return _parse(stream, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as err:
        # gzip.BadGzipFile is an OSError; a cut-off stream ends in EOFError.
        raise DataError(f"{path}: unreadable or corrupt gzip data ({err})") from None
