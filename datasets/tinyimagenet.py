"""Tiny-ImageNet-200: tiny-imagenet-200.zip -> tiny-imagenet-200/.

Class ids are the positions of the sorted wnids in wnids.txt. Train: train/<wnid>/images/*.JPEG
(500 per class, read in sorted order). Split "test" is the official validation set (the official
test set has no labels): val/images/<file> labelled by val/val_annotations.txt (tab separated:
file, wnid, box), in the file's order. Images are 64x64 JPEGs decoded with Pillow; the
grayscale ones are converted to RGB (the gray value in all three channels).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.errors import SourceError
from datasets.source import Source, extracted

ARCHIVE = "tiny-imagenet-200.zip"
TOP = "tiny-imagenet-200"
WORKERS = 4     # Pillow releases the GIL while decoding


def inputs(split):
    return (ARCHIVE,)


def build(folder, split, download):
    wnids_path, annotations = extracted(
        folder, ARCHIVE, (f"{TOP}/wnids.txt", f"{TOP}/val/val_annotations.txt"), download)
    base = wnids_path.parent
    wnids = sorted(wnids_path.read_text().split())
    if split == "train":
        items = [(path, k) for k, wnid in enumerate(wnids)
                 for path in _images(base / "train" / wnid / "images")]
    else:
        index = {wnid: k for k, wnid in enumerate(wnids)}
        rows = [line.split("\t") for line in annotations.read_text().splitlines() if line.strip()]
        try:
            items = [(base / "val" / "images" / row[0], index[row[1]]) for row in rows]
        except (IndexError, KeyError) as e:
            raise SourceError(f"{annotations}: bad row or unknown wnid ({e!r})") from None
    with ThreadPoolExecutor(WORKERS) as pool:
        images = list(tqdm(pool.map(_decode, [path for path, _ in items]), total=len(items),
                           desc=f"decoding {TOP} {split}", unit="img", leave=False))
    x = np.stack(images)                                                  # (n, c, h, w)
    return x, {"y": np.array([k for _, k in items], np.int64)}            # (n,)


def _images(directory):
    paths = sorted(directory.glob("*.JPEG"))
    if not paths:
        raise SourceError(f"{directory} holds no .JPEG images")
    return paths


def _decode(path):
    """The image at `path` as uint8 (3, 64, 64)."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))                        # (h, w, c)
    except OSError as e:
        raise SourceError(f"{path} cannot be decoded ({e})") from None
    if rgb.shape != (64, 64, 3):
        raise SourceError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, expected 64x64")
    return rgb.transpose(2, 0, 1)                                         # (c, h, w)


TINYIMAGENET = Source({"y": 200}, (3, 64, 64), ("train", "test"), inputs, build)
