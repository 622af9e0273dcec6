"""Downloads killed mid-stream resume with a Range request.

A ``.part`` file is never accepted as the asset.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import time

import pytest

from jukemir.assets import Asset, ChecksumError, retrieve
from tests.loopback import FileServer

from .helpers import REPO, cli_env, sigkill, tally, wait_for

pytestmark = pytest.mark.fault
BLOB = random.Random(5).randbytes(1 << 20)
SHA = hashlib.sha256(BLOB).hexdigest()
BIG = random.Random(6).randbytes(10 << 20)  # 10 reads of the downloader's 1 MiB: room for 4 kills mid-stream


@pytest.fixture
def server():
    """A throttled loopback server of BLOB at ``server.url`` (about 4 MiB/s)."""
    srv = FileServer(delay=0.004)
    srv.url = srv.add("/blob.bin", BLOB)
    yield srv
    srv.close()


def _ranges(server) -> list:
    return [r for _, r in server.requests]


def _start(server, root, checksum=SHA):
    return subprocess.Popen(
        [sys.executable, "-m", "faults.download_worker", server.url, str(root), checksum],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_download_resumes(server, tmp_path):
    server.add("/blob.bin", BIG)
    dest = tmp_path / "blobs" / "blob.bin"
    part = dest.with_name("blob.bin.part")
    rng = random.Random(3)
    kills, offsets = 0, []
    for _ in range(4):
        have = part.stat().st_size if part.exists() else 0
        proc = _start(server, tmp_path, hashlib.sha256(BIG).hexdigest())
        # kill once this run has written something (it writes 1 MiB at a time), up to 0.1 s later
        if wait_for(lambda have=have: part.exists() and part.stat().st_size > have, proc, poll=0.001):
            time.sleep(rng.uniform(0, 0.1))
            kills += sigkill(proc)
        assert not dest.exists(), "a partial download was accepted"
        offsets.append(part.stat().st_size)
    proc = _start(server, tmp_path, hashlib.sha256(BIG).hexdigest())
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert dest.read_bytes() == BIG and sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]
    assert _ranges(server) == [None] + [
        f"bytes={n}-" for n in offsets
    ]  # each run resumed where the last stopped
    assert kills == 4
    tally("kills", kills)


def test_corrupt_part_is_never_accepted(server, tmp_path):
    """A .part whose bytes are wrong (not a prefix of the asset): the resumed file fails its checksum,
    so the download starts over and the right file is installed."""
    dest = tmp_path / "blobs" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("blob.bin.part").write_bytes(b"\0" * 100_000)  # e.g. from an older version of the file
    path = retrieve(
        Asset("BLOB", "blobs/blob.bin", (server.url,), SHA), tmp_path, retries=1, backoff=0.01, progress=False
    )
    assert _sha(path) == SHA
    assert _ranges(server) == ["bytes=100000-", None]
    tally("bad_input")


def test_server_ignoring_range_and_dropping_connections(server, tmp_path):
    server.cut("/blob.bin", 200_000, 600_000)  # two responses cut short, then a whole one
    server.ignore_range = True
    path = retrieve(
        Asset("BLOB", "blobs/blob.bin", (server.url,), SHA), tmp_path, retries=3, backoff=0.01, progress=False
    )
    assert _sha(path) == SHA and len(_ranges(server)) == 3
    tally("bad_input")


def test_wrong_bytes_rejected(server, tmp_path):
    server.add("/blob.bin", BLOB[:-1] + b"x")
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
    assert len(_ranges(server)) == 1  # the second process waited for the first and found the file verified
    tally("concurrent", 2)


def test_offline_failure_is_one_line_per_asset_with_how_to_provide_it(tmp_path, capsys):
    """Without network every URL fails: one line per asset naming each URL once, no retry storm, and how
    to provide the file (its place in the cache, --mirror, the asset's own hint)."""
    import socket

    from jukemir.assets import DownloadError
    from jukemir.datasets.process import fetch

    with socket.socket() as s:  # a port nothing listens on: connection refused, like a dead network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    urls = (f"http://127.0.0.1:{port}/a.bin", f"http://127.0.0.1:{port}/b.bin")
    asset = Asset("OFFLINE", "datasets/x/a.bin", urls, SHA, hint="pass --weights FOLDER")
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        retrieve(asset, tmp_path, retries=3, backoff=0.01, progress=False)
    line = str(info.value)
    assert "\n" not in line and all(line.count(url) == 1 for url in urls) and "(4 tries)" in line
    assert f"put the file at {tmp_path / 'datasets/x/a.bin'}" in line and "--mirror" in line
    assert line.endswith("or pass --weights FOLDER")
    # an unknown host is not retried at all
    dns = Asset("NOHOST", "datasets/x/b.bin", ("http://no-such-host.invalid/b.bin",), SHA)
    with pytest.raises(
        DownloadError, match=r"no-such-host.invalid/b.bin: host not found \(.*offline\?\)\); without network"
    ):
        retrieve(dns, tmp_path, retries=3, backoff=5, progress=False)
    assert time.monotonic() - start < 5
    # several assets: each printed once, then one summary line
    with pytest.raises(DownloadError, match="2 of 2 files could not be downloaded"):
        fetch([asset, dns], jobs=2)
    err = capsys.readouterr().err
    assert err.count("asset OFFLINE:") == 1 and err.count("asset NOHOST:") == 1
    tally("bad_input", 3)


def test_mirror_folder_in_either_layout(tmp_path):
    """A mirror holds an asset at its mirror_path or at its path_rel.

    The first is a jukemir asset mirror, the second a cache copy.
    """
    for layout in ("weights/m/blob.bin", "models/m/blob.bin"):
        mirror = tmp_path / layout.split("/")[0] / "mirror"
        (mirror / layout).parent.mkdir(parents=True)
        (mirror / layout).write_bytes(BLOB)
        asset = Asset(
            "BLOB",
            "models/m/blob.bin",
            ("http://127.0.0.1:9/nowhere",),
            SHA,
            mirror_path="weights/m/blob.bin",
        )
        root = tmp_path / f"cache-{layout.split('/')[0]}"
        assert _sha(retrieve(asset, root, mirror=str(mirror), retries=0, progress=False)) == SHA
