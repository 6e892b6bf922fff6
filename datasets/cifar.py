"""CIFAR-10 and CIFAR-100, python version.

cifar-10-python.tar.gz -> cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta};
cifar-100-python.tar.gz -> cifar-100-python/{train, test, meta}. Each batch is a Python 2 pickle
(read with encoding="latin1") of a dict whose `data` is uint8 (n, 3072): row i holds the R, G and
B planes of image i, each 32x32 in row-major order, so x[i, c, r, k] = data[i, 1024 c + 32 r + k]
and x = data.reshape(n, 3, 32, 32). Labels: `labels` (CIFAR-10), `fine_labels` (0..99) and
`coarse_labels` (0..19) (CIFAR-100), lists of ints. The pickles are unpickled only after their
md5 matched, and only numpy's array constructors may be called from them.
"""
import pickle

import numpy as np

from datasets.errors import SourceError
from datasets.source import Source, extracted

ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but numpy's array reconstruction."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def decode(paths, fields):
    """x (n, 3, 32, 32) and {label set: (n,)} from the batch files `paths`; `fields` maps each
    label set to (its key in the batches, its number of classes)."""
    batches = [_unpickle(path) for path in paths]
    try:
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)  # (n, c, h, w)
        labels = {name: np.concatenate([np.asarray(b[key], np.int64) for b in batches])  # (n,)
                  for name, (key, _) in fields.items()}
    except (KeyError, ValueError, TypeError) as e:
        raise SourceError(f"{paths[0].parent} does not hold CIFAR batches ({e!r})") from None
    return x, labels


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return BatchUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise SourceError(f"{path} is not a CIFAR batch ({e})") from None


def _family(archive, top, batches, meta, fields):
    """The Source of one CIFAR archive; `batches` maps each split to its batch file names."""
    def inputs(split):
        return tuple(f"{top}/{name}" for name in batches[split])

    def build(folder, split, download):
        paths = extracted(folder, archive, (*inputs(split), f"{top}/{meta}"), download)
        return decode(paths[:-1], fields)

    classes = {name: count for name, (_, count) in fields.items()}
    return Source(classes, (3, 32, 32), tuple(batches), inputs, build)


CIFAR10 = _family("cifar-10-python.tar.gz", "cifar-10-batches-py",
                  {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                  "batches.meta", {"y": ("labels", 10)})
CIFAR100 = _family("cifar-100-python.tar.gz", "cifar-100-python",
                   {"train": ["train"], "test": ["test"]},
                   "meta", {"y": ("fine_labels", 100), "y_coarse": ("coarse_labels", 20)})
