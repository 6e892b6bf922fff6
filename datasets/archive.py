"""Safe extraction of .tar.gz / .tar and .zip archives.

Every member is checked before anything is written: only regular files and directories, and each
path must stay inside the target directory (no absolute path, no `..` that climbs out, no links).
The archive is unpacked into a temporary directory inside the target, then each top-level entry
is renamed into place (replacing an older copy), so a failed or interrupted extraction leaves
nothing half-written behind.
"""
import gzip
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from datasets.errors import SourceError

CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)

# Python >= 3.10.12 / 3.11.4 filter the members once more; older ones rely on the checks below.
TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def extract(archive, dest):
    """Unpack `archive` (.zip, else tar with any compression) into the directory `dest`."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            unpack = _unzip if archive.suffix == ".zip" else _untar
            unpack(archive, tmp)
        except CORRUPT as e:
            raise SourceError(f"{archive} is corrupt or truncated ({type(e).__name__}: {e}); "
                              f"delete it and run again") from None
        for entry in tmp.iterdir():
            _remove(dest / entry.name)
            os.replace(entry, dest / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _untar(archive, tmp):
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check(archive, member.name, tmp, member.isfile() or member.isdir())
        tar.extractall(tmp, members=members, **TAR_FILTER)


def _unzip(archive, tmp):
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            _check(archive, name, tmp, True)
        z.extractall(tmp)


def _check(archive, name, tmp, plain):
    """Refuse a member that is a link or device (`plain` False) or lands outside `tmp`."""
    if not plain:
        raise SourceError(f"{archive}: member {name!r} is a link or device file; refusing to "
                          f"extract the archive")
    inside = os.path.realpath(tmp)
    target = os.path.realpath(os.path.join(inside, name))
    if os.path.isabs(name) or os.path.commonpath([inside, target]) != inside:
        raise SourceError(f"{archive}: member {name!r} would be written outside the target "
                          f"directory; refusing to extract the archive")


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
