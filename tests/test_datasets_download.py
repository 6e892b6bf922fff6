"""Downloads from a loopback HTTP server started by the test: progress output, md5 check,
resume of a .part file with a Range request, servers that ignore Range or cut the connection."""
import http.server
import threading

import numpy as np
import pytest

import datasets
from archives import md5, offline, publish, svhn_mat  # noqa: F401
from datasets import download, files

pytestmark = pytest.mark.usefixtures("offline")

PAYLOAD = bytes(np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8))


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files; honours `Range: bytes=<start>-` when server.ranges; sends only the
    first server.cut bytes of a body (then closes) when server.cut is set."""

    def do_GET(self):
        server = self.server
        server.requests.append(self.headers.get("Range"))
        data = server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range") and server.ranges:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body[:server.cut] if server.cut else body)
        server.cut = None

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback HTTP server on a free port, stopped when the test ends."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.ranges, httpd.cut = {"f.bin": PAYLOAD}, [], True, None
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch):
    monkeypatch.setattr(download, "TIMEOUT", 5)


def test_download_shows_progress_and_checks_md5(server, tmp_path, capsys):
    path = download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    err = capsys.readouterr().err
    assert "f.bin" in err and "100%" in err and "293k/293k" in err
    assert server.requests == [None]


def test_leftover_part_file_is_resumed_with_a_range_request(server, tmp_path, capsys):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:100_000])
    download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests == ["bytes=100000-"]
    err = capsys.readouterr().err
    assert " 33%|" in err and "100%" in err          # the bar starts where the .part ended


def test_cut_connection_keeps_the_part_and_the_next_call_resumes(server, tmp_path):
    server.cut = 120_000
    with pytest.raises(datasets.MissingDataError, match="resume the partial download"):
        download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin.part").read_bytes() == PAYLOAD[:120_000]
    assert not (tmp_path / "f.bin").exists()
    download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests == [None, "bytes=120000-"]


def test_server_ignoring_range_sends_the_whole_file_again(server, tmp_path):
    server.ranges = False
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:50_000])
    download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_part_longer_than_the_file_starts_over(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD + b"junk")
    download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_damaged_part_fails_the_md5_and_is_discarded(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)
    with pytest.raises(datasets.ChecksumError, match="afresh"):
        download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert not (tmp_path / "f.bin.part").exists() and not (tmp_path / "f.bin").exists()
    download.download(server.url + "f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_http_error_names_the_file_and_where_to_put_it(server, tmp_path):
    with pytest.raises(datasets.MissingDataError, match="HTTP 404") as error:
        download.download(server.url + "missing.bin", tmp_path / "missing.bin", "ab" * 16)
    assert str(tmp_path) in str(error.value) and server.url + "missing.bin" in str(error.value)


def test_load_downloads_from_the_server(server, tmp_path, monkeypatch, rng):
    X = rng.integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    checksums = svhn_mat(tmp_path / "test_32x32.mat", X, [10, 2, 3])
    server.files["test_32x32.mat"] = (tmp_path / "test_32x32.mat").read_bytes()
    publish(monkeypatch, tmp_path, checksums)
    monkeypatch.setitem(files.URLS, "test_32x32.mat", server.url + "test_32x32.mat")
    x, y = datasets.load("svhn", "test", root=tmp_path / "root")
    np.testing.assert_array_equal(y, [0, 2, 3])
    np.testing.assert_array_equal(x, X.transpose(3, 2, 0, 1))
    assert (tmp_path / "root" / "svhn" / "test_32x32.mat").is_file()
