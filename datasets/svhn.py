"""SVHN, cropped digits: {train,test,extra}_32x32.mat (MATLAB v5, read with scipy.io.loadmat).

`X` is uint8 (32, 32, 3, n) indexed (row, column, channel, image), so x = X.transpose(3, 2, 0, 1)
(n, c, h, w); `y` is (n, 1) with labels 1..10 where 10 means the digit 0: y = label mod 10.
"""
import numpy as np
import scipy.io

from datasets.errors import SourceError
from datasets.source import Source, fetch


def inputs(split):
    return (f"{split}_32x32.mat",)


def build(folder, split, download):
    path = fetch(folder, inputs(split)[0], download)
    try:
        mat = scipy.io.loadmat(path)
        X, y = mat["X"], np.asarray(mat["y"]).reshape(-1)   # (32, 32, 3, n), (n,)
    except (ValueError, TypeError, OSError, KeyError, scipy.io.matlab.MatReadError) as e:
        raise SourceError(f"{path} is not an SVHN .mat file ({e!r})") from None
    if X.ndim != 4 or y.size != X.shape[-1] or not np.isin(y, np.arange(1, 11)).all():
        raise SourceError(f"{path} holds X {X.shape} and y {y.shape} with labels outside 1..10")
    x = np.ascontiguousarray(X.transpose(3, 2, 0, 1))                       # (n, c, h, w)
    return x, {"y": y.astype(np.int64) % 10}                                # (n,)


SVHN = Source({"y": 10}, (3, 32, 32), ("train", "test", "extra"), inputs, build, augment="crop")
