"""datasets: image datasets as uint8 arrays, with an HDF5 cache, augmentation and batching.

    import datasets
    x, y = datasets.load("cifar10", "train")          # uint8 (50000, 3, 32, 32), int64 (50000,)
    (x, y), (xv, yv) = datasets.split_validation(x, y, 1000, seed=0)
    loader = datasets.Loader(x, y, 128, shuffle=True, augment="crop_flip", seed=0)
    for epoch in range(start, epochs):
        loader.set_epoch(epoch)
        for xb, yb in loader: ...                    # float32 (128, 3, 32, 32) in [0, 1], int64

Names: cifar10, cifar100 (coarse=True: 20 superclasses), svhn (train/test/extra),
tinyimagenet ("test" is the official validation set), fashion_mnist, digits (scikit-learn's,
no download). Files live under datasets.default_root() (or `root`): $ROBUSTPRUNE_DATA, else
$XDG_CACHE_HOME/robustprune, else ~/.cache/robustprune. URLs and md5s: datasets.files.
"""
from datasets import files
from datasets.errors import ChecksumError, MissingDataError, SourceError
from datasets.loader import Augment, Loader
from datasets.registry import NAMES, default_augment, info, load
from datasets.source import default_root
from datasets.split import split_validation

__all__ = ["Augment", "ChecksumError", "Loader", "MissingDataError", "NAMES", "SourceError",
           "default_augment", "default_root", "files", "info", "load", "split_validation"]
