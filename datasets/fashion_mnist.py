"""Fashion-MNIST: gzipped IDX files, looked for in root/fashion_mnist, then in the directories
of files.SYSTEM_DIRS["fashion_mnist"] (Debian's dataset-fashion-mnist package), else downloaded.

IDX: a big-endian header, magic = 0x00 0x00 type ndim (type 0x08: uint8), then ndim uint32 sizes,
then the values in row-major order. Images: magic 0x803, sizes (n, 28, 28); labels: magic 0x801,
sizes (n,). The md5 checked is that of the decompressed bytes (files.MD5 keys drop the .gz).
"""
import gzip
import hashlib
import struct

import numpy as np

from datasets import files
from datasets.archive import CORRUPT
from datasets.errors import SourceError
from datasets.source import Source, fetch, verify

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def inputs(split):
    return FILES[split]


def build(folder, split, download):
    dirs = files.SYSTEM_DIRS.get("fashion_mnist", ())
    images, labels = (read_idx(fetch(folder, key + ".gz", download, dirs), key, ndim)
                      for key, ndim in zip(FILES[split], (3, 1)))
    if len(images) != len(labels):
        raise SourceError(f"{FILES[split]} hold {len(images)} images but {len(labels)} labels")
    return images[:, None], {"y": labels.astype(np.int64)}               # (n, 1, h, w), (n,)


def read_idx(path, key, ndim):
    """The uint8 array of `ndim` dimensions in the gzipped IDX file `path`."""
    try:
        with gzip.open(path) as f:
            data = f.read()
    except CORRUPT as e:
        raise SourceError(f"{path} is corrupt or truncated ({type(e).__name__}: {e})") from None
    verify(path, key, hashlib.md5(data).hexdigest())
    magic = 0x800 + ndim
    if len(data) < 4 + 4 * ndim or struct.unpack(">I", data[:4])[0] != magic:
        raise SourceError(f"{path} does not start with the IDX magic {magic:#06x}")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)          # (prod(shape),)
    if values.size != np.prod(shape):
        raise SourceError(f"{path} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)                                         # shape


FASHION_MNIST = Source({"y": 10}, (1, 28, 28), ("train", "test"), inputs, build, augment=None)
