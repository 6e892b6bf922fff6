"""Broken sources give one clear error and leave no half-written cache; stale or corrupt caches
are noticed and rebuilt."""
import io
import os
import pickle
import socket
import tarfile
import zipfile

import numpy as np
import pytest

import datasets
from archives import (cifar10_archive, idx_gz, md5, offline,  # noqa: F401
                      planes_to_images, publish, py2_pickle, svhn_mat, write_tar_gz)
from datasets import cache, files

pytestmark = pytest.mark.usefixtures("offline")

ARCHIVE = "cifar-10-python.tar.gz"


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    return folder


@pytest.fixture
def root(tmp_path):
    return tmp_path / "root"


def cifar10(path, rng, n=2):
    """A tiny cifar-10 archive at `path`: (its checksums, train data rows, train labels)."""
    train = [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n))
             for _ in range(5)]
    test = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n))
    checksums = cifar10_archive(path, train, test)
    return checksums, np.concatenate([d for d, _ in train]), np.concatenate([y for _, y in train])


def leftovers(tmp_path):
    """Cache files, temporary files and extraction directories anywhere under tmp_path."""
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.suffix in (".h5", ".tmp", ".part") or p.name.startswith(".extract-"))


def test_wrong_archive_checksum(tmp_path, server, root, monkeypatch, rng):
    checksums, _, _ = cifar10(server / ARCHIVE, rng)
    publish(monkeypatch, server, {**checksums, ARCHIVE: "0" * 32})
    with pytest.raises(datasets.ChecksumError, match="0{32}") as error:
        datasets.load("cifar10", root=root)
    assert checksums[ARCHIVE] in str(error.value) and "run again" in str(error.value)
    assert leftovers(tmp_path) == [] and not (root / "cifar10" / ARCHIVE).exists()


def test_archive_placed_by_hand_with_a_wrong_checksum(tmp_path, root, monkeypatch, rng):
    (root / "cifar10").mkdir(parents=True)
    checksums, _, _ = cifar10(root / "cifar10" / ARCHIVE, rng)
    with pytest.raises(datasets.ChecksumError, match="delete it"):
        datasets.load("cifar10", root=root)            # files.MD5 holds the official md5
    assert leftovers(tmp_path) == []


def test_wrong_member_checksum(tmp_path, server, root, monkeypatch, rng):
    checksums, _, _ = cifar10(server / ARCHIVE, rng)
    publish(monkeypatch, server, {**checksums, "cifar-10-batches-py/data_batch_4": "1" * 32})
    with pytest.raises(datasets.ChecksumError, match="data_batch_4"):
        datasets.load("cifar10", root=root)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("cut", [0.5, 0.98])
def test_truncated_archive_with_its_own_checksum(tmp_path, server, root, monkeypatch, rng, cut):
    checksums, _, _ = cifar10(server / ARCHIVE, rng)
    data = (server / ARCHIVE).read_bytes()
    (server / ARCHIVE).write_bytes(data[:int(cut * len(data))])
    publish(monkeypatch, server, {**checksums, ARCHIVE: md5_of(server / ARCHIVE)})
    with pytest.raises(datasets.SourceError, match="corrupt or truncated"):
        datasets.load("cifar10", root=root)
    assert leftovers(tmp_path) == []
    assert not (root / "cifar10" / "cifar-10-batches-py").exists()


def test_truncated_archive_fails_the_published_checksum(tmp_path, server, root, monkeypatch,
                                                        rng):
    checksums, _, _ = cifar10(server / ARCHIVE, rng)
    data = (server / ARCHIVE).read_bytes()
    (server / ARCHIVE).write_bytes(data[:len(data) // 2])
    publish(monkeypatch, server, checksums)
    with pytest.raises(datasets.ChecksumError, match="afresh"):
        datasets.load("cifar10", root=root)
    assert leftovers(tmp_path) == [] and not (root / "cifar10" / ARCHIVE).exists()


def test_corrupt_zip(tmp_path, root, monkeypatch):
    (root / "tinyimagenet").mkdir(parents=True)
    path = root / "tinyimagenet" / "tiny-imagenet-200.zip"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    monkeypatch.setitem(files.MD5, path.name, md5_of(path))
    with pytest.raises(datasets.SourceError, match="corrupt or truncated"):
        datasets.load("tinyimagenet", root=root)
    assert leftovers(tmp_path) == []


def test_archive_without_a_member(tmp_path, server, root, monkeypatch, rng):
    checksums, _, _ = cifar10(tmp_path / "full.tar.gz", rng)
    with tarfile.open(tmp_path / "full.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                   if not m.name.endswith("data_batch_3")}
    write_tar_gz(server / ARCHIVE, members)
    publish(monkeypatch, server, {**checksums, ARCHIVE: md5_of(server / ARCHIVE)})
    with pytest.raises(datasets.SourceError, match="no member cifar-10-batches-py/data_batch_3"):
        datasets.load("cifar10", root=root)
    assert leftovers(tmp_path) == []


def test_missing_file_with_download_off(tmp_path, root):
    with pytest.raises(datasets.MissingDataError) as error:
        datasets.load("cifar10", root=root, download=False)
    message = str(error.value)
    assert str(root / "cifar10") in message and ARCHIVE in message
    assert files.URLS[ARCHIVE] in message
    assert leftovers(tmp_path) == []


def test_unreachable_server_gives_one_message_not_a_urllib_traceback(tmp_path, root,
                                                                     monkeypatch):
    with socket.socket() as s:           # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/train_32x32.mat"
    monkeypatch.setitem(files.URLS, "train_32x32.mat", url)
    with pytest.raises(datasets.MissingDataError) as error:
        datasets.load("svhn", root=root)
    message = str(error.value)
    assert url in message and str(root / "svhn") in message and "train_32x32.mat" in message
    assert files.MD5["train_32x32.mat"] in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert leftovers(tmp_path) == []


def tar_with(path, member):
    """A .tar.gz at `path` holding the one TarInfo `member` (a file gets 4 bytes)."""
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)


def file_member(name):
    member = tarfile.TarInfo(name)
    member.size = 4
    return member


def link_member(name, target, kind):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member


@pytest.mark.parametrize("member", [
    file_member("../escaped.txt"),
    file_member("cifar-10-batches-py/../../escaped.txt"),
    file_member("/tmp/escaped_absolute.txt"),
    link_member("cifar-10-batches-py/data_batch_1", "/etc/passwd", tarfile.SYMTYPE),
    link_member("cifar-10-batches-py/data_batch_2", "../../escaped.txt", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_path_escaping_tar_member_is_refused(tmp_path, server, root, monkeypatch, member):
    tar_with(server / ARCHIVE, member)
    publish(monkeypatch, server, {ARCHIVE: md5_of(server / ARCHIVE)})
    with pytest.raises(datasets.SourceError, match="refusing to extract"):
        datasets.load("cifar10", root=root)
    assert not list(tmp_path.rglob("escaped*"))
    assert not os.path.exists("/tmp/escaped_absolute.txt")
    assert leftovers(tmp_path) == []
    assert not (root / "cifar10" / "cifar-10-batches-py").exists()


def test_path_escaping_zip_member_is_refused(tmp_path, server, root, monkeypatch):
    with zipfile.ZipFile(server / "tiny-imagenet-200.zip", "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
        z.writestr("../escaped.txt", "evil")
    publish(monkeypatch, server, {"tiny-imagenet-200.zip": md5_of(
        server / "tiny-imagenet-200.zip")})
    with pytest.raises(datasets.SourceError, match="outside the target directory"):
        datasets.load("tinyimagenet", root=root)
    assert not list(tmp_path.rglob("escaped.txt")) and leftovers(tmp_path) == []
    assert not (root / "tinyimagenet" / "tiny-imagenet-200").exists()


def test_pickle_calling_other_code_is_refused(tmp_path, server, root, monkeypatch):
    evil = pickle.dumps({"data": os.getcwd}, protocol=2)     # would call os.getcwd
    members = {f"cifar-10-batches-py/{name}": evil
               for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    members["cifar-10-batches-py/batches.meta"] = py2_pickle({"label_names": []})
    write_tar_gz(server / ARCHIVE, members)
    publish(monkeypatch, server, {ARCHIVE: md5_of(server / ARCHIVE),
                                  **{k: md5(v) for k, v in members.items()}})
    with pytest.raises(datasets.SourceError, match="posix.getcwd is not allowed"):
        datasets.load("cifar10", root=root)
    assert leftovers(tmp_path) == []


def test_fashion_mnist_checksum_of_the_decompressed_bytes(tmp_path, root, monkeypatch, rng):
    folder = root / "fashion_mnist"
    folder.mkdir(parents=True)
    checksums = {**idx_gz(folder / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28))),
                 **idx_gz(folder / "train-labels-idx1-ubyte.gz", np.zeros(2))}
    publish(monkeypatch, folder, checksums)
    datasets.load("fashion_mnist", root=root)                     # passes
    (folder / "train.h5").unlink()
    publish(monkeypatch, folder, {"train-labels-idx1-ubyte": "2" * 32})
    with pytest.raises(datasets.ChecksumError, match="train-labels-idx1-ubyte"):
        datasets.load("fashion_mnist", root=root)
    assert leftovers(tmp_path) == []


def test_decoded_labels_out_of_range_are_refused(tmp_path, server, root, monkeypatch, rng):
    X = rng.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
    publish(monkeypatch, server, svhn_mat(server / "test_32x32.mat", X, [1, 11]))
    with pytest.raises(datasets.SourceError, match="1..10"):
        datasets.load("svhn", "test", root=root)
    assert leftovers(tmp_path) == []


def test_interrupted_cache_write_leaves_nothing(tmp_path):
    x = np.zeros((2, 1, 2, 2), np.uint8)
    with pytest.raises(TypeError):
        cache.write(tmp_path / "split.h5", x, {"y": np.array([object(), object()])}, "md5")
    assert list(tmp_path.iterdir()) == []


def test_stale_cache_is_rebuilt(tmp_path, server, root, monkeypatch, rng):
    checksums, data, labels = cifar10(server / ARCHIVE, rng)
    publish(monkeypatch, server, checksums)
    datasets.load("cifar10", root=root)
    checksums, data, labels = cifar10(root / "cifar10" / ARCHIVE, rng, n=3)  # a new release
    publish(monkeypatch, server, checksums)           # replaces the archive and its md5s
    with pytest.warns(UserWarning, match="other source files"):
        x, y = datasets.load("cifar10", root=root)
    np.testing.assert_array_equal(x, planes_to_images(data))
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_rebuilt(tmp_path, server, root, monkeypatch, rng, damage):
    checksums, data, labels = cifar10(server / ARCHIVE, rng, n=40)
    publish(monkeypatch, server, checksums)
    datasets.load("cifar10", root=root)
    path = root / "cifar10" / "train.h5"
    content = path.read_bytes()
    path.write_bytes(os.urandom(4096) if damage == "garbage" else content[:len(content) // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        x, y = datasets.load("cifar10", root=root)
    np.testing.assert_array_equal(x, planes_to_images(data))
    assert cache.read(path, checksum_of_train()) is not None


def test_split_larger_than_memory_is_memory_mapped(tmp_path, server, root, monkeypatch, rng):
    checksums, data, labels = cifar10(server / ARCHIVE, rng)
    publish(monkeypatch, server, checksums)
    x0, _ = datasets.load("cifar10", root=root)
    monkeypatch.setattr(cache, "memory_bytes", lambda: 1000)
    x, y = datasets.load("cifar10", root=root)
    assert isinstance(x, np.memmap) and not x.flags.writeable and x.flags.c_contiguous
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, labels)


def checksum_of_train():
    return ",".join(files.MD5[f"cifar-10-batches-py/data_batch_{i}"] for i in range(1, 6))


def md5_of(path):
    return md5(path.read_bytes())
