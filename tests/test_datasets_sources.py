"""Each dataset, built as a tiny file in its official format, loads through the real code path
(file:// download, md5 checks, safe extraction, decoding, HDF5 cache), with the pixel order
checked on hand-made images."""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import datasets
from archives import (cifar10_archive, cifar100_archive, idx_gz, offline,  # noqa: F401
                      planes_to_images, publish, svhn_mat, tinyimagenet_zip)
from datasets import files

pytestmark = pytest.mark.usefixtures("offline")

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def cifar_rows(rng, n):
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    return folder


def test_cifar10_pixel_order_on_a_hand_made_image(tmp_path, server, monkeypatch, rng):
    image = np.zeros((1, 3072), np.uint8)
    image[0, 0] = 255                  # R plane, row 0, column 0
    image[0, 1024 + 1] = 200           # G plane, row 0, column 1
    image[0, 2048 + 32] = 100          # B plane, row 1, column 0
    image[0, 2048 + 32 * 31 + 30] = 7  # B plane, row 31, column 30
    train = [(image, [3])] + [(cifar_rows(rng, 1), [0]) for _ in range(4)]
    publish(monkeypatch, server, cifar10_archive(server / "cifar-10-python.tar.gz", train,
                                                 (cifar_rows(rng, 1), [1])))
    x, y = datasets.load("cifar10", "train", root=tmp_path / "root")
    expected = np.zeros((3, 32, 32), np.uint8)
    expected[0, 0, 0], expected[1, 0, 1], expected[2, 1, 0], expected[2, 31, 30] = 255, 200, 100, 7
    np.testing.assert_array_equal(x[0], expected)
    assert y[0] == 3


def test_cifar10_train_and_test_through_download_extract_and_cache(tmp_path, server,
                                                                   monkeypatch, rng):
    train = [(cifar_rows(rng, k), rng.integers(0, 10, k)) for k in (3, 2, 3, 1, 2)]
    test = (cifar_rows(rng, 4), rng.integers(0, 10, 4))
    publish(monkeypatch, server, cifar10_archive(server / "cifar-10-python.tar.gz", train, test))
    root = tmp_path / "root"
    x, y = datasets.load("cifar10", "train", root=root)
    assert x.dtype == np.uint8 and x.shape == (11, 3, 32, 32) and x.flags.c_contiguous
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x, planes_to_images(np.concatenate([d for d, _ in train])))
    np.testing.assert_array_equal(y, np.concatenate([labels for _, labels in train]))
    xt, yt = datasets.load("cifar10", "test", root=root)
    np.testing.assert_array_equal(xt, planes_to_images(test[0]))
    np.testing.assert_array_equal(yt, test[1])
    assert sorted(p.name for p in (root / "cifar10").glob("*.h5")) == ["test.h5", "train.h5"]
    for path in server.iterdir():      # the cache alone serves later loads
        path.unlink()
    for path in (root / "cifar10").iterdir():
        if path.suffix != ".h5":
            path.unlink() if path.is_file() else shutil.rmtree(path)
    x2, y2 = datasets.load("cifar10", "train", root=root, download=False)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_cifar100_fine_and_coarse_labels(tmp_path, server, monkeypatch, rng):
    fine, coarse = rng.integers(0, 100, 5), rng.integers(0, 20, 5)
    train, test = (cifar_rows(rng, 5), fine, coarse), (cifar_rows(rng, 2), [99, 0], [19, 0])
    publish(monkeypatch, server, cifar100_archive(server / "cifar-100-python.tar.gz", train, test))
    root = tmp_path / "root"
    x, y = datasets.load("cifar100", root=root)
    _, y_coarse = datasets.load("cifar100", root=root, coarse=True)
    np.testing.assert_array_equal(x, planes_to_images(train[0]))
    np.testing.assert_array_equal(y, fine)
    np.testing.assert_array_equal(y_coarse, coarse)
    _, yt = datasets.load("cifar100", "test", root=root, coarse=False)
    np.testing.assert_array_equal(yt, [99, 0])
    assert datasets.info("cifar100", coarse=True)["num_classes"] == 20


def test_svhn_label_10_is_zero_and_pixel_order(tmp_path, server, monkeypatch, rng):
    X = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)   # (row, column, channel, image)
    X[:, :, :, 0] = 0
    X[5, 7, 1, 0] = 200                                        # row 5, column 7, green
    labels = np.array([10, 1, 9, 10, 5, 3])
    publish(monkeypatch, server, svhn_mat(server / "extra_32x32.mat", X, labels))
    x, y = datasets.load("svhn", "extra", root=tmp_path / "root")
    np.testing.assert_array_equal(y, [0, 1, 9, 0, 5, 3])
    assert x.shape == (6, 3, 32, 32) and x[0].sum() == 200 and x[0, 1, 5, 7] == 200
    for i, c, r, k in np.ndindex(2, 3, 32, 32):
        assert x[i, c, r, k] == X[r, k, c, i]


def test_tinyimagenet_sorted_wnids_val_as_test_and_grayscale(tmp_path, server, monkeypatch):
    def solid(rgb):
        return np.broadcast_to(np.array(rgb, np.uint8), (64, 64, 3))

    halves = np.zeros((64, 64, 3), np.uint8)
    halves[:, :32, 0] = 250                  # left half red, right half blue
    halves[:, 32:, 2] = 250
    gray = np.full((64, 64), 90, np.uint8)
    train = {"n03": [solid((0, 200, 0)), gray], "n01": [halves], "n02": [solid((10, 20, 30))]}
    val = [(solid((200, 0, 0)), "n02"), (gray, "n03"), (halves, "n01")]
    publish(monkeypatch, server, tinyimagenet_zip(server / "tiny-imagenet-200.zip", train, val))
    root = tmp_path / "root"
    x, y = datasets.load("tinyimagenet", "train", root=root)
    np.testing.assert_array_equal(y, [0, 1, 2, 2])            # n01 < n02 < n03
    assert x.shape == (4, 3, 64, 64)
    close = dict(atol=6)
    np.testing.assert_allclose(x[0, 0, :, :24], 250, **close)    # red on the left
    np.testing.assert_allclose(x[0, 2, :, 40:], 250, **close)    # blue on the right
    np.testing.assert_allclose(x[0, 0, :, 40:], 0, **close)
    np.testing.assert_allclose(x[0, 2, :, :24], 0, **close)
    np.testing.assert_allclose(x[1].reshape(3, -1).mean(1), (10, 20, 30), **close)
    np.testing.assert_allclose(x[2, 1], 200, **close)
    np.testing.assert_array_equal(x[3, 0], x[3, 1])            # grayscale -> equal channels
    np.testing.assert_array_equal(x[3, 0], x[3, 2])
    np.testing.assert_allclose(x[3], 90, **close)
    xt, yt = datasets.load("tinyimagenet", "test", root=root)
    np.testing.assert_array_equal(yt, [1, 2, 0])
    np.testing.assert_allclose(xt[0, 0], 200, **close)


def test_fashion_mnist_idx_found_in_a_system_directory(tmp_path, monkeypatch, rng):
    system = tmp_path / "usr_share"
    system.mkdir()
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 3, 1], np.uint8)
    checksums = {**idx_gz(system / "t10k-images-idx3-ubyte.gz", images),
                 **idx_gz(system / "t10k-labels-idx1-ubyte.gz", labels)}
    for key, value in checksums.items():
        monkeypatch.setitem(files.MD5, key, value)
    monkeypatch.setitem(files.SYSTEM_DIRS, "fashion_mnist", (str(system),))
    x, y = datasets.load("fashion_mnist", "test", root=tmp_path / "root", download=False)
    raw = gzip.decompress((system / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03" and x.shape == (5, 1, 28, 28)
    for i, r, k in np.ndindex(5, 28, 28):
        assert x[i, 0, r, k] == raw[16 + 784 * i + 28 * r + k]
    np.testing.assert_array_equal(y, labels)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package_with_published_md5s(tmp_path, monkeypatch):
    monkeypatch.setitem(files.SYSTEM_DIRS, "fashion_mnist", (str(DEBIAN_FASHION),))
    x, y = datasets.load("fashion_mnist", "test", root=tmp_path, download=False)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    assert (tmp_path / "fashion_mnist" / "test.h5").is_file()


def test_digits_scaled_with_a_fixed_stratified_split():
    digits = load_digits()
    x, y = datasets.load("digits", "train")
    xt, yt = datasets.load("digits", "test")
    assert x.shape == (1438, 1, 8, 8) and xt.shape == (359, 1, 8, 8) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y) + np.bincount(yt), np.bincount(digits.target))
    assert np.all(np.abs(np.bincount(yt) - 0.2 * np.bincount(digits.target)) < 1)
    scaled = np.floor(digits.data * 255 / 16 + 0.5).astype(np.uint8).reshape(-1, 1, 8, 8)
    every = np.concatenate([x, xt]).reshape(len(scaled), -1)
    assert sorted(map(bytes, every)) == sorted(map(bytes, scaled.reshape(len(scaled), -1)))
    x2, y2 = datasets.load("digits", "train")
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_info_names_and_bad_arguments():
    assert set(datasets.NAMES) == {"cifar10", "cifar100", "svhn", "tinyimagenet",
                                   "fashion_mnist", "digits"}
    assert datasets.info("cifar10") == dict(num_classes=10, shape=(3, 32, 32),
                                            splits=("train", "test"))
    assert datasets.info("svhn")["splits"] == ("train", "test", "extra")
    assert datasets.info("tinyimagenet")["shape"] == (3, 64, 64)
    assert datasets.info("fashion_mnist")["shape"] == (1, 28, 28)
    assert datasets.info("digits")["shape"] == (1, 8, 8)
    with pytest.raises(ValueError, match="mnist"):
        datasets.load("mnist")
    with pytest.raises(ValueError, match="'val'"):
        datasets.load("digits", "val")
    with pytest.raises(TypeError, match="coarse"):
        datasets.load("cifar10", coarse=True)
    with pytest.raises(TypeError, match="True or False"):
        datasets.info("cifar100", coarse="yes")


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTPRUNE_DATA", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert datasets.default_root() == tmp_path / "a"
    monkeypatch.delenv("ROBUSTPRUNE_DATA")
    assert datasets.default_root() == tmp_path / "b" / "robustprune"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_root() == tmp_path / "home" / ".cache" / "robustprune"


def test_load_without_root_uses_the_default_root(server, monkeypatch, rng):
    X = rng.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
    publish(monkeypatch, server, svhn_mat(server / "test_32x32.mat", X, [1, 2]))
    datasets.load("svhn", "test")
    assert (Path(os.environ["ROBUSTPRUNE_DATA"]) / "svhn" / "test.h5").is_file()


def test_verified_extracted_files_serve_without_the_archive(tmp_path, server, monkeypatch, rng):
    train = [(cifar_rows(rng, 2), [1, 2]) for _ in range(5)]
    publish(monkeypatch, server, cifar10_archive(server / "cifar-10-python.tar.gz", train,
                                                 (cifar_rows(rng, 1), [0])))
    root = tmp_path / "root"
    x, _ = datasets.load("cifar10", root=root)
    (root / "cifar10" / "train.h5").unlink()
    (root / "cifar10" / "cifar-10-python.tar.gz").unlink()
    (server / "cifar-10-python.tar.gz").unlink()
    x2, _ = datasets.load("cifar10", root=root, download=False)
    np.testing.assert_array_equal(x2, x)
    (root / "cifar10" / "train.h5").unlink()
    (root / "cifar10" / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"damaged")
    with pytest.raises(datasets.MissingDataError, match="cifar-10-python.tar.gz"):
        datasets.load("cifar10", root=root, download=False)     # needs the archive again
