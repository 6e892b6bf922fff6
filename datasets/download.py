"""Download a URL to a file with a progress bar, resumable through a `.part` file.

The bytes go to `<path>.part`. A later call continues a leftover `.part` with an HTTP Range
request (`Range: bytes=<size>-`); a server that answers 200 instead of 206 sends the whole file,
which then replaces the `.part`. Only a complete file whose md5 matches is renamed to `path`, so
`path` never holds a partial or unverified download. Network failures become one MissingDataError
that says where to put the file by hand, never a traceback from urllib.
"""
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from datasets.errors import ChecksumError, MissingDataError

CHUNK = 1 << 20     # bytes per read
TIMEOUT = 60        # seconds without progress before a download is given up

NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


def md5sum(path):
    """Hex md5 of the bytes of the file at `path`."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 * CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, path, md5=None, progress=True):
    """Fetch `url` into `path` (resuming `<path>.part`), check its md5 when given; returns path."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    try:
        _fetch(url, part, path.name, progress)
    except NETWORK_ERRORS as e:
        reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else (
            getattr(e, "reason", None) or e)
        raise MissingDataError(
            f"cannot download {url} ({reason}).\nPut {path.name}"
            f"{f' (md5 {md5})' if md5 else ''} into {path.parent}/ by hand (get it from {url}), "
            f"or run again on a machine with network access"
            f"{' to resume the partial download' if part.exists() else ''}.") from None
    if md5 is not None and (actual := md5sum(part)) != md5:
        part.unlink()
        raise ChecksumError(f"{url} arrived with md5 {actual}, expected {md5}; the download was "
                            f"discarded, run again to fetch it afresh")
    os.replace(part, path)
    return path


def _open(url, offset):
    """(response, start): the response body is the file from byte `start`, which is `offset`
    when the server honoured the Range request and 0 when it sends the whole file."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        return _open(url, 0)    # 416: the .part is no prefix the server can continue
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and not content_range.startswith(f"bytes {offset}-"):
        response.close()
        return _open(url, 0)
    return response, offset if response.status == 206 else 0


def _fetch(url, part, name, progress):
    """Write the remaining bytes of `url` into `part`, with a tqdm bar on stderr."""
    offset = part.stat().st_size if part.exists() else 0
    response, start = _open(url, offset)
    with response:
        remaining = response.headers.get("Content-Length")
        total = start + int(remaining) if remaining is not None else None
        if progress:
            print(f"downloading {url}", file=sys.stderr)
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, disable=not progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - part.stat().st_size)
