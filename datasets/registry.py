"""The datasets by name, `load` and `info`.

load(name, split): the split's HDF5 cache root/<name>/<split>.h5 when it matches the source
checksum of the split's files (files.MD5), else the split is built from its source files (found,
downloaded, verified, extracted, decoded), checked, cached and returned.
"""
from pathlib import Path

import numpy as np

from datasets import cache, cifar, digits, fashion_mnist, svhn, tinyimagenet
from datasets.errors import SourceError
from datasets.source import default_root, source_md5

SOURCES = {
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "svhn": svhn.SVHN,
    "tinyimagenet": tinyimagenet.TINYIMAGENET,
    "fashion_mnist": fashion_mnist.FASHION_MNIST,
    "digits": digits.DIGITS,
}
NAMES = tuple(SOURCES)


def load(name, split="train", root=None, download=True, **options):
    """(x, y): x uint8 (n, c, h, w) C-contiguous, y int64 (n,), of split `split` of dataset
    `name`. Options: cifar100 coarse=True gives the 20 superclass labels."""
    source, labels_name = _source(name, options)
    if split not in source.splits:
        raise ValueError(f"split must be one of {source.splits} for {name}, got {split!r}")
    if not source.cached:
        x, labels = _checked(name, split, source, *source.build(None, split, download))
        return x, labels[labels_name]
    folder = Path(default_root() if root is None else root) / name
    path, checksum = folder / f"{split}.h5", source_md5(source.inputs(split))
    stored = cache.read(path, checksum)
    if stored is None:
        stored = _checked(name, split, source, *source.build(folder, split, download))
        cache.write(path, *stored, checksum)
    x, labels = stored
    return x, labels[labels_name]


def info(name, **options):
    """dict(num_classes, shape=(c, h, w), splits) of dataset `name` (with load's options)."""
    source, labels_name = _source(name, options)
    return dict(num_classes=source.classes[labels_name], shape=source.shape,
                splits=source.splits)


def default_augment(name, split):
    """The usual augmentation for `split` of `name` (a Loader `augment`); None except for
    training splits: test and validation data are never augmented."""
    source, _ = _source(name, {})
    return source.augment if split == "train" else None


def _source(name, options):
    """(Source, name of the label set the options select)."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")
    source = SOURCES[name]
    allowed = sorted(key[2:] for key in source.classes if key != "y")
    for option, value in options.items():
        if option not in allowed:
            raise TypeError(f"unknown option {option}={value!r} for {name}; options: {allowed}")
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"option {option} must be True or False, got {value!r}")
    chosen = [option for option, value in options.items() if value]
    if len(chosen) > 1:
        raise ValueError(f"options {chosen} select different labels; choose one")
    return source, ("y_" + chosen[0] if chosen else "y")


def _checked(name, split, source, x, labels):
    """x as C-contiguous writable uint8 and labels, after checking them against the Source."""
    x = np.require(x, requirements=("C", "W"))                      # (n, c, h, w)
    if x.dtype != np.uint8 or x.shape[1:] != source.shape:
        raise SourceError(f"{name} {split}: decoded images are {x.dtype} {x.shape[1:]}, "
                          f"expected uint8 {source.shape}")
    for labels_name, y in labels.items():
        count = source.classes[labels_name]
        if y.shape != x.shape[:1] or (y.size and not 0 <= y.min() <= y.max() < count):
            raise SourceError(f"{name} {split}: {labels_name} has shape {y.shape} and values "
                              f"outside 0..{count - 1} for {len(x)} images")
    return x, labels
