"""Downloads killed mid-stream resume with a Range request; a ``.part`` file is never accepted as the asset."""

from __future__ import annotations

import hashlib
import http.server
import random
import re
import subprocess
import sys
import threading
import time

import pytest

from jukemir.assets import Asset, ChecksumError, retrieve

from .helpers import REPO, cli_env, sigkill, tally, wait_for

pytestmark = pytest.mark.fault
BLOB = random.Random(5).randbytes(1 << 20)
SHA = hashlib.sha256(BLOB).hexdigest()
BIG = random.Random(6).randbytes(10 << 20)  # 10 reads of the downloader's 1 MiB: room for 4 kills mid-stream


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        data = srv.data
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not srv.ignore_range:
            start, status = int(match[1]), 206
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if srv.drops:
            body = body[: srv.drops.pop(0)]  # the connection closes early
        for i in range(0, len(body), 16384):
            self.wfile.write(body[i : i + 16384])
            time.sleep(srv.delay)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A throttled loopback server of BLOB (4 MiB/s)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.data, httpd.ranges, httpd.drops, httpd.ignore_range, httpd.delay = BLOB, [], [], False, 0.004
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/blob.bin"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _start(server, root, checksum=SHA):
    return subprocess.Popen([sys.executable, "-m", "faults.download_worker", server.url, str(root), checksum],
                            cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_download_resumes(server, tmp_path):
    server.data = BIG
    dest = tmp_path / "blobs" / "blob.bin"
    part = dest.with_name("blob.bin.part")
    rng = random.Random(3)
    kills, offsets = 0, []
    for _ in range(4):
        have = part.stat().st_size if part.exists() else 0
        proc = _start(server, tmp_path, hashlib.sha256(BIG).hexdigest())
        # kill once this run has written something (it writes 1 MiB at a time), up to 0.1 s later
        if wait_for(lambda: part.exists() and part.stat().st_size > have, proc, poll=0.001):
            time.sleep(rng.uniform(0, 0.1))
            kills += sigkill(proc)
        assert not dest.exists(), "a partial download was accepted"
        offsets.append(part.stat().st_size)
    proc = _start(server, tmp_path, hashlib.sha256(BIG).hexdigest())
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert dest.read_bytes() == BIG and sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]
    assert server.ranges == [None] + [f"bytes={n}-" for n in offsets]  # each run resumed where the last stopped
    assert kills == 4
    tally("kills", kills)


def test_corrupt_part_is_never_accepted(server, tmp_path):
    """A .part whose bytes are wrong (not a prefix of the asset): the resumed file fails its checksum,
    so the download starts over and the right file is installed."""
    dest = tmp_path / "blobs" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("blob.bin.part").write_bytes(b"\0" * 100_000)  # e.g. from an older version of the file
    path = retrieve(Asset("BLOB", "blobs/blob.bin", (server.url,), SHA), tmp_path, retries=1, backoff=0.01, progress=False)
    assert _sha(path) == SHA
    assert server.ranges == ["bytes=100000-", None]
    tally("bad_input")


def test_server_ignoring_range_and_dropping_connections(server, tmp_path):
    server.drops = [200_000, 600_000]  # two responses cut short, then a whole one
    server.ignore_range = True
    path = retrieve(Asset("BLOB", "blobs/blob.bin", (server.url,), SHA), tmp_path, retries=3, backoff=0.01, progress=False)
    assert _sha(path) == SHA and len(server.ranges) == 3
    tally("bad_input")


def test_wrong_bytes_rejected(server, tmp_path):
    server.data = BLOB[:-1] + b"x"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        retrieve(Asset("BLOB", "blobs/blob.bin", (server.url,), SHA), tmp_path, retries=0, progress=False)
    assert not list((tmp_path / "blobs").iterdir())  # neither the asset nor a .part
    tally("bad_input")


def test_two_processes_download_the_same_asset(server, tmp_path):
    server.delay = 0.02  # about 1.3 s: the two overlap
    procs = [_start(server, tmp_path) for _ in range(2)]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
    dest = tmp_path / "blobs" / "blob.bin"
    assert _sha(dest) == SHA
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]
    assert len(server.ranges) == 1  # the second process waited for the first and found the file verified
    tally("concurrent", 2)
