"""scikit-learn's bundled 8x8 digits (1797 images, values 0..16): no download.

x = round(v * 255 / 16) as uint8 (n, 1, 8, 8); a fixed stratified split holds out 20% as the
test set (split_validation with seed 0: 1438 train, 359 test images).
"""
import numpy as np
from sklearn.datasets import load_digits

from datasets.source import Source
from datasets.split import split_validation

TEST_FRACTION = 0.2
SEED = 0


def build(folder, split, download):
    digits = load_digits()
    x = np.rint(digits.data * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)   # (n, c, h, w)
    y = digits.target.astype(np.int64)                                          # (n,)
    train, test = split_validation(x, y, TEST_FRACTION, SEED)
    x, y = train if split == "train" else test
    return x, {"y": y}


DIGITS = Source({"y": 10}, (1, 8, 8), ("train", "test"), lambda split: (), build, augment=None,
                cached=False)
