"""Mini-batches of uint8 images as float32 in [0, 1], with vectorised augmentation.

Notation: n images in a batch, c channels, h w image size, p padding, (dy, dx) crop offsets.

Augment (on a uint8 batch x (n, c, h, w), no loop over images): pad every image by p pixels on
each side, with zeros or by reflection (numpy.pad / torch "reflect": the edge pixel is not
repeated), cut out y[i] = xpad[i, :, dy_i:dy_i + h, dx_i:dx_i + w] with dy_i, dx_i uniform on
{0..2p}, and with flip=True mirror y[i] left-right with probability 1/2.

Loader: pass e over (x, y) draws everything random from numpy.random.default_rng((seed, e)): the
permutation first (when shuffling), then the augmentation batch by batch. So the batches of pass
e depend only on (seed, e) and the loader's settings. `loader.epoch` is the number of the next
pass: starting an iteration takes it and adds one at once; `set_epoch(e)` makes the next pass
number e (for a resumed run).
"""
import importlib
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BACKENDS = ("numpy", "gpu")


class Augment:
    """Random crop of the padded image, then a random horizontal flip (if flip)."""

    def __init__(self, padding=4, padding_mode="zero", flip=True):
        if not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"padding must be an int >= 0, got {padding!r}")
        if padding_mode not in ("zero", "reflect"):
            raise ValueError(f"padding_mode must be 'zero' or 'reflect', got {padding_mode!r}")
        self.padding, self.padding_mode, self.flip = int(padding), padding_mode, bool(flip)

    def __repr__(self):
        return (f"Augment(padding={self.padding}, padding_mode={self.padding_mode!r}, "
                f"flip={self.flip})")

    def __call__(self, x, rng):
        """The augmented copy of the uint8 batch x (n, c, h, w); draws from the Generator rng."""
        n, c, h, w = x.shape
        p = self.padding
        xpad = self._pad(x)                                             # (n, c, h+2p, w+2p)
        dy = rng.integers(0, 2 * p + 1, size=n)                         # (n,)
        dx = rng.integers(0, 2 * p + 1, size=n)                         # (n,)
        windows = sliding_window_view(xpad, (h, w), axis=(2, 3))        # (n, c, 2p+1, 2p+1, h, w)
        y = windows[np.arange(n), :, dy, dx]                            # (n, c, h, w)
        if self.flip:
            mirror = rng.random(n) < 0.5                                # (n,)
            y[mirror] = y[mirror, :, :, ::-1]
        return y

    def _pad(self, x):
        n, c, h, w = x.shape
        p = self.padding
        if self.padding_mode == "reflect":
            if p >= min(h, w):
                raise ValueError(f"reflect padding {p} needs images larger than {p}, got {h}x{w}")
            return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")  # (n, c, h+2p, w+2p)
        xpad = np.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)         # (n, c, h+2p, w+2p)
        xpad[:, :, p:p + h, p:p + w] = x
        return xpad


AUGMENTS = {"crop_flip": Augment(4, "zero", flip=True), "crop": Augment(4, "zero", flip=False)}


class Loader:
    """Iterates (xb, yb): xb float32 (b, c, h, w) = augment(x[idx]) / 255, yb int64 (b,) =
    y[idx], for consecutive blocks idx of the pass's order, on the requested backend ("gpu":
    the uint8 images are uploaded, a quarter of float32's bytes, and divided on the device, with
    the same float32 result); with indices=True (xb, yb, idx), idx the dataset indices
    (b,) as a host int64 array (for per-sample state such as a perturbation memory). `epoch` is
    the number of the next pass (see above)."""

    def __init__(self, x, y, batch_size, shuffle=False, augment=None, drop_last=False, seed=0,
                 backend="numpy", indices=False):
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            raise TypeError(f"x must be a uint8 numpy array (n, c, h, w), got "
                            f"{type(x).__name__} {getattr(x, 'dtype', '')} "
                            f"{getattr(x, 'shape', '')}")
        y = np.asarray(y)
        if y.shape != x.shape[:1] or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y must hold one integer label per image {x.shape[:1]}, got "
                             f"{y.dtype} {y.shape}")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.x, self.y = x, y.astype(np.int64, copy=False)              # (n, c, h, w), (n,)
        self.batch_size, self.shuffle = int(batch_size), bool(shuffle)
        self.drop_last = bool(drop_last)
        self.augment = _augment(augment)
        self.seed, self.backend, self.epoch = int(seed), backend, 0
        self.indices = bool(indices)
        self.xp = importlib.import_module("gpu").cupy if backend == "gpu" else np   # array module

    def __len__(self):
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch):
        """Make the next pass number `epoch`."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(np.random.default_rng((self.seed, epoch)))

    def _batches(self, rng):
        n, b = len(self.x), self.batch_size
        order = rng.permutation(n) if self.shuffle else np.arange(n)    # (n,)
        for start in range(0, len(self) * b, b):
            idx = order[start:start + b]                                # (b,)
            xb = self.x[idx]                                            # (b, c, h, w) uint8
            if self.augment is not None:
                xb = self.augment(xb, rng)                              # (b, c, h, w) uint8
            xb = self.xp.asarray(xb)                                    # (b, c, h, w) uint8
            xb = self.xp.divide(xb, self.xp.float32(255), dtype=self.xp.float32)   # (b, c, h, w)
            batch = xb, self.xp.asarray(self.y[idx])
            yield batch + (idx,) if self.indices else batch


def _augment(augment):
    """None, an Augment, or the Augment named "crop_flip" / "crop"."""
    if augment is None or isinstance(augment, Augment):
        return augment
    if isinstance(augment, str) and augment in AUGMENTS:
        return AUGMENTS[augment]
    raise ValueError(f"augment must be None, an Augment or one of {sorted(AUGMENTS)}, got "
                     f"{augment!r}")
