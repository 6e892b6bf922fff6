"""Builders of tiny dataset files in the exact official formats, for tests and bench/.

Each builder writes one file and returns {files.MD5 key: md5} for what it wrote (archive and
members), so a test can point datasets.files.MD5 at it with `publish`.
"""
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did (protocol 2): bytes and str both become Python 2 str
    (SHORT_BINSTRING / BINSTRING), and numpy arrays name numpy.core.multiarray._reconstruct."""

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        if getattr(obj, "__module__", "") == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + obj.__name__.encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj):
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def md5(data):
    return hashlib.md5(data).hexdigest()


def write_tar_gz(path, members):
    """A .tar.gz at `path` of {member name: bytes}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def cifar_batch(data, labels, key="labels", **extra):
    """The dict of one CIFAR batch: data uint8 (n, 3072) as R, G, B planes of 32x32 row-major."""
    n = len(data)
    batch = {"batch_label": "test batch", key: [int(v) for v in labels],
             "data": np.asarray(data, np.uint8), "filenames": [f"img_{i}.png" for i in range(n)]}
    batch.update({k: [int(v) for v in values] for k, values in extra.items()})
    return batch


def cifar10_archive(path, train, test):
    """cifar-10-python.tar.gz at `path` from train = 5 (data (n, 3072), labels) batches and
    test = one (data, labels) batch."""
    top = "cifar-10-batches-py"
    batches = {f"data_batch_{i + 1}": cifar_batch(*b) for i, b in enumerate(train)}
    batches["test_batch"] = cifar_batch(*test)
    meta = {"num_cases_per_batch": len(test[0]), "num_vis": 3072,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]}
    return _cifar_archive(path, top, {**batches, "batches.meta": meta})


def cifar100_archive(path, train, test):
    """cifar-100-python.tar.gz at `path` from train and test = (data (n, 3072), fine, coarse)."""
    top = "cifar-100-python"
    members = {split: cifar_batch(data, fine, "fine_labels", coarse_labels=coarse)
               for split, (data, fine, coarse) in (("train", train), ("test", test))}
    members["meta"] = {"fine_label_names": [f"fine_{i}" for i in range(100)],
                       "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    return _cifar_archive(path, top, members)


def _cifar_archive(path, top, members):
    data = {f"{top}/{name}": py2_pickle(obj) for name, obj in members.items()}
    write_tar_gz(path, data)
    return {path.name: md5(path.read_bytes()), **{name: md5(d) for name, d in data.items()}}


def svhn_mat(path, X, y):
    """An SVHN .mat (MATLAB v5) at `path`: X uint8 (32, 32, 3, n), y (n,) with labels 1..10."""
    scipy.io.savemat(path, {"X": np.asarray(X, np.uint8),
                            "y": np.asarray(y, np.uint8).reshape(-1, 1)})
    return {path.name: md5(path.read_bytes())}


def jpeg(image):
    """JPEG bytes of a uint8 image (h, w, 3) RGB or (h, w) grayscale."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def tinyimagenet_zip(path, train, val, extra_members=None):
    """tiny-imagenet-200.zip at `path`: train = {wnid: [image, ...]}, val = [(image, wnid)];
    images uint8 (64, 64, 3) or grayscale (64, 64)."""
    top = "tiny-imagenet-200"
    members = {f"{top}/wnids.txt": "".join(f"{w}\n" for w in train).encode(),
               f"{top}/words.txt": "".join(f"{w}\tthing {w}\n" for w in train).encode()}
    for wnid, images in train.items():
        members[f"{top}/train/{wnid}/{wnid}_boxes.txt"] = "".join(
            f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(len(images))).encode()
        members.update({f"{top}/train/{wnid}/images/{wnid}_{i}.JPEG": jpeg(image)
                        for i, image in enumerate(images)})
    members[f"{top}/val/val_annotations.txt"] = "".join(
        f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n" for i, (_, wnid) in enumerate(val)).encode()
    members.update({f"{top}/val/images/val_{i}.JPEG": jpeg(image)
                    for i, (image, _) in enumerate(val)})
    members[f"{top}/test/images/test_0.JPEG"] = jpeg(np.zeros((64, 64, 3)))
    members.update(extra_members or {})
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return {path.name: md5(path.read_bytes())}


def idx_gz(path, array):
    """A gzipped IDX file of the uint8 `array` at `path`: magic 0x0000 08 <ndim>, big-endian
    uint32 sizes, the values row-major. Returns the md5 of the decompressed bytes under the
    name without .gz, as files.MD5 keys it."""
    array = np.asarray(array, np.uint8)
    data = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data))
    return {path.name[:-len(".gz")]: md5(data)}


def publish(monkeypatch, folder, checksums):
    """Serve the files built in `folder` at file:// URLs and make their md5s the published ones."""
    from datasets import files
    for key, value in checksums.items():
        monkeypatch.setitem(files.MD5, key, value)
    for name in files.URLS:
        if (folder / name).is_file():
            monkeypatch.setitem(files.URLS, name, (folder / name).as_uri())


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Keep a test off the network and off the user's files: every URL points at a missing local
    file, no system directory is searched, and the default root is a temporary directory."""
    from datasets import files
    for name in files.URLS:
        monkeypatch.setitem(files.URLS, name, (tmp_path / "nowhere" / name).as_uri())
    monkeypatch.setitem(files.SYSTEM_DIRS, "fashion_mnist", ())
    monkeypatch.setenv("ROBUSTPRUNE_DATA", str(tmp_path / "default_root"))


def planes_to_images(data):
    """x (n, 3, 32, 32) from CIFAR rows (n, 3072), written out plane by plane and row by row."""
    x = np.empty((len(data), 3, 32, 32), np.uint8)
    for c in range(3):
        for r in range(32):
            x[:, c, r, :] = data[:, 1024 * c + 32 * r:1024 * c + 32 * r + 32]
    return x
