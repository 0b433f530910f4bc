"""The datasets scratchcnn knows, where their files are looked for, and how they are verified.

Search order for each file: the ``data_dir`` argument (``--data-dir``), then ``$SCRATCHCNN_DATA``,
then the user cache (``$XDG_CACHE_HOME/scratchcnn/<dataset>`` or ``~/.cache/scratchcnn/<dataset>``),
then well-known system copies. A folder may hold the files directly or in a ``<dataset>``
sub-folder. Missing files are downloaded into the cache.

Each file's *uncompressed* content is checked against a known MD5 every time it is used: the
four MNIST files hash in about 0.4 s, and a remembered "verified" flag could not tell a file
corrupted in place with the same size and modification time.

Only the cache is ever written to. A corrupt file found in the cache (through the cache's own
path) is replaced by a fresh download; a corrupt file found in a folder the user named
(``--data-dir``, ``$SCRATCHCNN_DATA``), even one that is the cache through a link, is an
error that names it, and is never deleted or overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .download import Progress, content_md5, fetch_from_mirrors

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataFile:
    filename: str
    md5: str  # of the uncompressed content


@dataclass(frozen=True)
class Dataset:
    name: str
    files: dict[tuple[str, str], DataFile]  # (split, "images" | "labels") -> file
    mirrors: tuple[str, ...]
    system_dirs: tuple[Path, ...]
    classes: tuple[str, ...]
    mean: float  # of the training images scaled to [0, 1]
    std: float


def _files(md5s: dict[tuple[str, str], str]) -> dict[tuple[str, str], DataFile]:
    names = {"train": "train", "test": "t10k"}
    dims = {"images": "idx3", "labels": "idx1"}
    return {
        (split, kind): DataFile(f"{names[split]}-{kind}-{dims[kind]}-ubyte.gz", md5)
        for (split, kind), md5 in md5s.items()
    }


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        files=_files(
            {
                ("train", "images"): "6bbc9ace898e44ae57da46a324031adb",
                ("train", "labels"): "a25bea736e30d166cdddb491f175f624",
                ("test", "images"): "2646ac647ad5339dbf082846283269ea",
                ("test", "labels"): "27ae3e4e09519cfbb04c329615203637",
            }
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        system_dirs=(Path("/usr/share/datasets/mnist"),),
        classes=tuple(str(d) for d in range(10)),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        files=_files(
            {
                ("train", "images"): "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                ("train", "labels"): "9018921c3c673c538a1fc5bad174d6f9",
                ("test", "images"): "8181f5470baa50b63fa0f6fddb340f0a",
                ("test", "labels"): "15d484375f8d13e6eb1aabb0c3f46965",
            }
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),  # fmt: skip
        mean=0.2860,
        std=0.3530,
    ),
}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; choose one of: {known}") from None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scratchcnn`` or ``~/.cache/scratchcnn``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scratchcnn"


def search_dirs(dataset: Dataset, data_dir: str | Path | None = None) -> list[Path]:
    """Every folder looked in, in order."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("SCRATCHCNN_DATA"):
        roots.append(Path(os.environ["SCRATCHCNN_DATA"]).expanduser())
    roots.append(cache_dir())
    dirs: list[Path] = []
    for root in roots:
        dirs += [root, root / dataset.name]
    return dirs + list(dataset.system_dirs)


def verify(path: Path, file: DataFile) -> bool:
    """True when ``path``'s uncompressed content has ``file.md5``."""
    return content_md5(path) == file.md5


def ensure_files(
    name: str,
    data_dir: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> dict[tuple[str, str], Path]:
    """Find, verify and if needed download the dataset's files; returns (split, kind) -> path.

    A file that exists but fails its checksum is an error when it is the user's (we never
    touch their folders) and is replaced by a fresh download when it is in our cache.
    Mirrors default to ``$SCRATCHCNN_MIRRORS`` (comma-separated base URLs), else the built-in
    list.
    """
    dataset = get_dataset(name)
    if mirrors is None:
        env = os.environ.get("SCRATCHCNN_MIRRORS", "")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] or list(dataset.mirrors)
    dirs = search_dirs(dataset, data_dir)
    cache = cache_dir() / dataset.name
    ours = {cache_dir(), cache}  # the cache's own paths: the only folders we ever write to
    found: dict[tuple[str, str], Path] = {}
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose train or test")
        for kind in ("images", "labels"):
            file = dataset.files[(split, kind)]
            found[(split, kind)] = _locate(dataset, file, dirs, ours, mirrors, timeout, progress)
    return found


def _locate(dataset, file, dirs, ours, mirrors, timeout, progress) -> Path:
    for folder in dirs:
        path = folder / file.filename
        if not path.is_file():
            continue
        if verify(path, file):
            return path
        if folder in ours:  # our own corrupt copy: a fresh download replaces it below
            break
        raise DataError(
            f"{path} does not match the checksum of {dataset.name} {file.filename} "
            f"(expected content MD5 {file.md5}); replace it with an intact copy"
        )
    target = cache_dir() / dataset.name / file.filename
    try:
        fetch_from_mirrors(file.filename, mirrors, target, file.md5, timeout, progress=progress)
    except DataError as err:
        raise DataError(
            f"{err}\nNo copy of {file.filename} was found in: "
            + ", ".join(str(d) for d in dirs)
            + f".\nTo install {dataset.name} by hand, put its four files "
            f"({', '.join(f.filename for f in dataset.files.values())}) in {target.parent} "
            "or in a folder you pass with --data-dir (or $SCRATCHCNN_DATA)."
        ) from None
    return target
