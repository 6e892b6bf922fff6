"""What a dataset is made of, and how its files are found and verified.

A Source names its splits, image shape (c, h, w) and label sets, the keys in files.MD5 of the
files each split is decoded from (their md5s, joined, are the split's source checksum, stored
with its cache), and `build(folder, split, download) -> (x, labels)` which finds, verifies and
decodes them: x uint8 (n, c, h, w), labels {name: int64 (n,)}. `folder` is root/<dataset name>;
the default root is $ROBUSTPRUNE_DATA, else $XDG_CACHE_HOME/robustprune, else
~/.cache/robustprune.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from datasets import files
from datasets.archive import extract
from datasets.download import download as fetch_url
from datasets.download import md5sum
from datasets.errors import ChecksumError, MissingDataError, SourceError


@dataclass(frozen=True)
class Source:
    """A dataset. `classes` maps each label set to its number of classes: "y" is returned by
    default, "y_<option>" when load() gets <option>=True (CIFAR-100's y_coarse)."""
    classes: dict
    shape: tuple
    splits: tuple
    inputs: Callable            # split -> tuple of files.MD5 keys the split is decoded from
    build: Callable             # (folder, split, download) -> (x, labels)
    augment: Optional[str] = "crop_flip"     # the usual training augmentation
    cached: bool = True         # False: cheap to build, never written to disk


def default_root():
    """$ROBUSTPRUNE_DATA, else $XDG_CACHE_HOME/robustprune, else ~/.cache/robustprune."""
    if os.environ.get("ROBUSTPRUNE_DATA"):
        return Path(os.environ["ROBUSTPRUNE_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "robustprune"


def source_md5(keys):
    """The checksum of a split decoded from the files `keys`: their md5s joined by commas."""
    return ",".join(files.MD5.get(key, "unknown") for key in keys)


def verify(path, key, actual=None):
    """Raise ChecksumError unless the md5 of `path` (or the given `actual` md5 of its content)
    is files.MD5[key]; files without an entry pass."""
    expected = files.MD5.get(key)
    if expected is None:
        return
    actual = md5sum(path) if actual is None else actual
    if actual != expected:
        raise ChecksumError(f"{path} has md5 {actual} but the published md5 of {key} is "
                            f"{expected}: the file is damaged or not the official one; delete it "
                            f"and run again")


def fetch(folder, name, download, dirs=()):
    """Path of the verified file `name`: found in `folder` or `dirs`, else downloaded into
    `folder` from files.URLS[name] (MissingDataError when absent and download is False)."""
    for directory in (folder, *map(Path, dirs)):
        if (directory / name).is_file():
            verify(directory / name, name)
            return directory / name
    url = files.URLS[name]
    if not download:
        raise MissingDataError(f"{folder / name} not found (and download=False). Put {name} "
                               f"into {folder}/ (get it from {url}).")
    folder.mkdir(parents=True, exist_ok=True)
    return fetch_url(url, folder / name, files.MD5.get(name))


def extracted(folder, archive, members, download):
    """Paths folder/<member> of the archive members, all present and verified. When one is
    missing or fails its md5, `archive` is found or downloaded (see fetch) and extracted."""
    paths = [folder / member for member in members]
    if not all(_intact(path, member) for path, member in zip(paths, members)):
        extract(fetch(folder, archive, download), folder)
        for path, member in zip(paths, members):
            if not path.is_file():
                raise SourceError(f"{folder / archive} has no member {member}")
            verify(path, member)
    return paths


def _intact(path, key):
    """Whether `path` is a file that passes verify()."""
    if not path.is_file():
        return False
    try:
        verify(path, key)
    except ChecksumError:
        return False
    return True
