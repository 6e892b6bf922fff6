"""HDF5 cache of one decoded split.

Layout: dataset `x` uint8 (n, c, h, w), contiguous (no chunks, no filters), and one int64 (n,)
dataset per label set (`y`, and `y_coarse` for CIFAR-100); attributes `source_md5` (the md5s of
the files the split was decoded from) and `version` (of this layout).

`write` fills a temporary file in the same directory and renames it over the cache, so a reader
never sees a half-written file. `read` returns None, with a warning, for a stale cache (other
source_md5 or version) or an unreadable one, and the caller rebuilds it. A split that fits in
memory is read whole in one sequential read; a larger one comes back as a read-only memory map
of the contiguous dataset.
"""
import os
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np

VERSION = 1


def write(path, x, labels, source_md5):
    """Store x (n, c, h, w) uint8 and labels {name: (n,) int64} at `path`, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("x", data=x)
            for name, y in labels.items():
                f.create_dataset(name, data=y)
            f.attrs["source_md5"] = source_md5
            f.attrs["version"] = VERSION
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path, source_md5):
    """(x, labels) from the cache at `path`; None when it is missing, stale or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("version") != VERSION or f.attrs.get("source_md5") != source_md5:
                warnings.warn(f"{path} was built from other source files; rebuilding it",
                              stacklevel=3)
                return None
            labels = {name: f[name][()] for name in f if name != "x"}     # {name: (n,)}
            x = _read_x(path, f["x"])
    except (OSError, KeyError, ValueError) as e:
        warnings.warn(f"{path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return None
    if x.dtype != np.uint8 or x.ndim != 4 or any(
            y.dtype != np.int64 or y.shape != x.shape[:1] for y in labels.values()):
        warnings.warn(f"{path} does not hold a split in the expected layout; rebuilding it",
                      stacklevel=3)
        return None
    return x, labels


def memory_bytes():
    """Physical memory of this machine in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _read_x(path, dataset):
    """The dataset whole in memory if it takes at most half the RAM, else a read-only memmap."""
    memory = memory_bytes()
    offset = dataset.id.get_offset()
    if offset is None or memory is None or dataset.nbytes <= memory // 2:
        x = np.empty(dataset.shape, dataset.dtype)                # (n, c, h, w)
        dataset.read_direct(x)
        return x
    return np.memmap(path, dataset.dtype, "r", offset, dataset.shape)   # (n, c, h, w)
