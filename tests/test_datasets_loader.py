"""Loader batches, reproducibility by (seed, pass), augmentation (crop inside the padded image,
flips with probability 1/2, never on test splits) and the stratified validation split."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import datasets
from datasets import Augment, Loader, split_validation


def images(rng, n, c=3, h=8, w=8):
    """Distinct random uint8 images without zeros, so a zero always means padding."""
    return rng.integers(1, 256, (n, c, h, w), dtype=np.uint8)


def padded(x, p, mode):
    """x (n, c, h, w) padded by p on each spatial side, written out pixel by pixel."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)
    for r in range(h + 2 * p):
        for k in range(w + 2 * p):
            if mode == "zero" and not (p <= r < p + h and p <= k < p + w):
                continue
            out[:, :, r, k] = x[:, :, reflect(r - p, h), reflect(k - p, w)]
    return out


def reflect(i, size):
    """Index i mirrored into [0, size) without repeating the edge (torch 'reflect')."""
    return -i if i < 0 else 2 * (size - 1) - i if i >= size else i


def windows_matching(image, big, flip):
    """All (dy, dx, mirrored) with image == big[:, dy:dy+h, dx:dx+w] (mirrored if said)."""
    c, h, w = image.shape
    found = []
    for dy in range(big.shape[1] - h + 1):
        for dx in range(big.shape[2] - w + 1):
            window = big[:, dy:dy + h, dx:dx + w]
            for mirrored in (False, True) if flip else (False,):
                if np.array_equal(image, window[:, :, ::-1] if mirrored else window):
                    found.append((dy, dx, mirrored))
    return found


@given(n=st.integers(1, 40), b=st.integers(1, 12), drop_last=st.booleans(),
       shuffle=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batches_cover_the_data_scaled_to_unit_range(n, b, drop_last, shuffle, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 2, 3, 3), dtype=np.uint8)
    y = np.arange(n) * 7 % 5
    loader = Loader(x, y, b, shuffle=shuffle, drop_last=drop_last, seed=seed % 1000)
    batches = list(loader)
    assert len(batches) == len(loader) == (n // b if drop_last else -(-n // b))
    seen = []
    for xb, yb in batches:
        assert xb.dtype == np.float32 and yb.dtype == np.int64
        assert len(xb) == len(yb) and (len(xb) == b or not drop_last)
        index = [int(np.flatnonzero((x == np.rint(image * 255)).all(axis=(1, 2, 3))
                                    & (y == label))[0]) for image, label in zip(xb, yb)]
        np.testing.assert_array_equal(xb, (x[index] / np.float64(255)).astype(np.float32))
        seen += index
    assert len(seen) == len(set(seen)) == ((n // b) * b if drop_last else n)
    if not shuffle:
        assert seen == list(range(len(seen)))


def test_identical_seeds_give_identical_batches_and_passes_are_counted(rng):
    x, y = images(rng, 50), rng.integers(0, 10, 50)

    def run(loader):
        return [(xb.copy(), yb.copy()) for xb, yb in loader]

    a = Loader(x, y, 16, shuffle=True, augment="crop_flip", seed=3)
    b = Loader(x, y, 16, shuffle=True, augment="crop_flip", seed=3)
    assert a.epoch == 0
    first, second = run(a), run(a)
    assert a.epoch == 2
    assert_same(first, run(b))
    assert_same(second, run(b))
    resumed = Loader(x, y, 16, shuffle=True, augment="crop_flip", seed=3)
    resumed.set_epoch(1)
    assert_same(second, run(resumed))
    assert resumed.epoch == 2
    assert not np.array_equal(first[0][1], second[0][1])
    other = run(Loader(x, y, 16, shuffle=True, augment="crop_flip", seed=4))
    assert not np.array_equal(first[0][0], other[0][0])
    iterator = iter(a)                      # the pass is taken when iteration starts
    assert a.epoch == 3
    assert_same([next(iterator)], run_first(Loader(x, y, 16, shuffle=True, augment="crop_flip",
                                                   seed=3), epoch=2))


def run_first(loader, epoch):
    loader.set_epoch(epoch)
    return [next(iter(loader))]


def assert_same(batches, others):
    assert len(batches) == len(others)
    for (xa, ya), (xb, yb) in zip(batches, others):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crops_are_windows_of_the_padded_image(rng, mode):
    x = images(rng, 300, c=2, h=6, w=7)
    p = 3
    y = Augment(padding=p, padding_mode=mode, flip=True)(x, np.random.default_rng(0))
    assert y.dtype == np.uint8 and y.shape == x.shape
    big = padded(x, p, mode)
    offsets = set()
    for i in range(len(x)):
        found = windows_matching(y[i], big[i], flip=True)
        assert found, f"image {i} is no window of its padded image"
        offsets.update((dy, dx) for dy, dx, _ in found)
    assert offsets == {(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)}


def test_reflect_padding_does_not_repeat_the_edge():
    x = np.array([1, 2, 3, 4], np.uint8).reshape(1, 1, 1, 4).repeat(4, axis=2)
    assert [reflect(i - 2, 4) + 1 for i in range(8)] == [3, 2, 1, 2, 3, 4, 3, 2]
    np.testing.assert_array_equal(padded(x, 2, "reflect")[0, 0, 0], [3, 2, 1, 2, 3, 4, 3, 2])
    y = Augment(2, "reflect", flip=False)(x, np.random.default_rng(1))
    assert windows_matching(y[0], padded(x, 2, "reflect")[0], flip=False)
    with pytest.raises(ValueError, match="reflect padding 4"):
        Augment(4, "reflect")(x, np.random.default_rng(0))


def test_flips_happen_with_probability_one_half(rng):
    n = 4000
    x = images(rng, n, c=1, h=2, w=3)
    x[:, :, :, 0] = 1                  # left column differs from the right one: a flip shows
    x[:, :, :, 2] = 2
    y = Augment(padding=0, flip=True)(x, np.random.default_rng(2024))
    same = (y == x).all(axis=(1, 2, 3))
    mirrored = (y == x[:, :, :, ::-1]).all(axis=(1, 2, 3))
    assert not (same & mirrored).any() and (same | mirrored).all()
    # Binomial(4000, 1/2): standard deviation 31.6; 4 of them hold with probability > 0.9999.
    assert abs(mirrored.sum() - n / 2) < 4 * np.sqrt(n) / 2
    unflipped = Augment(padding=0, flip=False)(x, np.random.default_rng(2024))
    np.testing.assert_array_equal(unflipped, x)


def test_test_splits_are_never_augmented(rng):
    for name in datasets.NAMES:
        for split in datasets.info(name)["splits"]:
            if split != "train":
                assert datasets.default_augment(name, split) is None
    assert datasets.default_augment("cifar10", "train") == "crop_flip"
    assert datasets.default_augment("svhn", "train") == "crop"
    x, y = images(rng, 20), np.zeros(20, np.int64)
    loader = Loader(x, y, 8, shuffle=True, augment=datasets.default_augment("cifar10", "test"))
    for xb, _ in loader:
        for image in np.rint(xb * 255).astype(np.uint8):
            assert (image == x).all(axis=(1, 2, 3)).any()


def test_crop_without_flip_for_svhn(rng):
    x = images(rng, 200, c=1, h=5, w=5)
    augment = Loader(x, np.zeros(200, np.int64), 200, augment="crop").augment
    y = augment(x, np.random.default_rng(5))
    big = padded(x, 4, "zero")
    for i in range(200):
        assert windows_matching(y[i], big[i], flip=False), f"image {i} is mirrored or no crop"


def test_gpu_backend_uploads_uint8_and_gives_the_numpy_batches(monkeypatch, rng):
    import gpu
    uploaded = []
    upload = gpu.cupy.asarray

    def recording(a, *args, **kwargs):
        uploaded.append(a.dtype)
        return upload(a, *args, **kwargs)

    x, y = images(rng, 10), np.arange(10)
    want = list(Loader(x, y, 4, shuffle=True, augment="crop_flip", seed=3))
    monkeypatch.setattr(gpu.cupy, "asarray", recording)
    got = list(Loader(x, y, 4, shuffle=True, augment="crop_flip", seed=3, backend="gpu"))
    assert uploaded == [np.uint8, np.int64] * 3
    assert len(got) == len(want) == 3
    for (xb, yb), (x_want, y_want) in zip(got, want):
        assert isinstance(xb, gpu.cupy.ndarray) and xb.dtype == np.float32
        np.testing.assert_array_equal(gpu.cupy.asnumpy(xb), x_want)
        np.testing.assert_array_equal(gpu.cupy.asnumpy(yb), y_want)


def test_bad_loader_arguments_are_named(rng):
    x, y = images(rng, 4), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(x, y, 0)
    with pytest.raises(TypeError, match="uint8"):
        Loader(x.astype(np.float32), y, 2)
    with pytest.raises(ValueError, match="one integer label per image"):
        Loader(x, y[:3], 2)
    with pytest.raises(ValueError, match="rotate"):
        Loader(x, y, 2, augment="rotate")
    with pytest.raises(ValueError, match="cuda"):
        Loader(x, y, 2, backend="cuda")
    with pytest.raises(ValueError, match="seed"):
        Loader(x, y, 2, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        Loader(x, y, 2).set_epoch(-2)
    with pytest.raises(ValueError, match="padding must"):
        Augment(padding=-1)
    with pytest.raises(ValueError, match="padding_mode"):
        Augment(padding_mode="edge")


@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6),
       fraction=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_split_validation_is_stratified_disjoint_and_seeded(sizes, fraction, seed):
    y = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)) * 3, sizes))
    x = np.arange(len(y)) * 10                     # x identifies each item
    (xt, yt), (xv, yv) = split_validation(x, y, fraction, seed)
    m = round(fraction * len(y))
    assert len(xv) == m and len(xt) == len(y) - m
    assert sorted(np.concatenate([xt, xv])) == list(x)
    np.testing.assert_array_equal(y[xt // 10], yt)
    np.testing.assert_array_equal(y[xv // 10], yv)
    assert list(xv) == sorted(xv) and list(xt) == sorted(xt)        # original order kept
    for label, size in zip(np.arange(len(sizes)) * 3, sizes):
        assert abs((yv == label).sum() - size * m / len(y)) < 1
    (_, _), (xv2, _) = split_validation(x, y, fraction, seed)
    np.testing.assert_array_equal(xv, xv2)


def test_split_validation_count_and_errors(rng):
    x, y = images(rng, 100, h=2, w=2), np.repeat([0, 1, 2, 3], 25)
    (xt, yt), (xv, yv) = split_validation(x, y, 10, seed=1)
    assert len(xv) == 10 and len(xt) == 90 and xt.flags.c_contiguous
    np.testing.assert_array_equal(np.bincount(yv), [3, 3, 2, 2])    # ties: lower labels first
    (_, _), (xv3, _) = split_validation(x, y, 10, seed=2)
    assert not np.array_equal(xv, xv3)
    with pytest.raises(ValueError, match="out of range"):
        split_validation(x, y, 101, seed=0)
    with pytest.raises(ValueError, match="out of range"):
        split_validation(x, y, 1.5, seed=0)
    with pytest.raises(TypeError, match="n_or_fraction"):
        split_validation(x, y, True, seed=0)
    with pytest.raises(ValueError, match="as many items"):
        split_validation(x, y[:50], 10, seed=0)
