"""Datasets beside the engine: a strict IDX reader, verified downloads, and batching."""

from ..errors import DataError
from .datasets import DATASETS, Dataset, cache_dir, ensure_files, get_dataset, search_dirs
from .download import content_md5, fetch, fetch_from_mirrors
from .idx import read_idx
from .loading import batches, load, to_batch, train_val_split

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "batches",
    "cache_dir",
    "content_md5",
    "ensure_files",
    "fetch",
    "fetch_from_mirrors",
    "get_dataset",
    "load",
    "read_idx",
    "search_dirs",
    "to_batch",
    "train_val_split",
]
