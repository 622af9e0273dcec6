"""jukemir.weights: the one path model weights take (declare, fetch and verify, convert once, load)."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from jukemir import cache
from jukemir.assets import Asset, DownloadError
from jukemir.io import atomic_write
from jukemir.weights import Official, check_keys, convert_once, converted_dir, fingerprint


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_official_verifies_or_trusts_on_first_use(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "weights" / "toy").mkdir(parents=True)
    pinned, trusted = b"pinned bytes", b"trusted bytes"
    (mirror / "weights" / "toy" / "a.bin").write_bytes(pinned)
    (mirror / "weights" / "toy" / "b.bin").write_bytes(trusted)
    checked = []
    files = Official(
        "toy",
        (
            Asset("TOY_A", "models/toy/a.bin", (), sha256(pinned), mirror_path="weights/toy/a.bin"),
            Asset("TOY_B", "models/toy/b.bin", (), None, len(trusted), mirror_path="weights/toy/b.bin"),
        ),
        check=checked.append,
    )
    a, b = files.assets
    assert files.sha256(a) == sha256(pinned) and files.sha256(b) is None  # not downloaded yet: unknown
    paths = files.fetch(mirror=str(mirror))
    assert paths == [cache.models_dir() / "toy" / "a.bin", cache.models_dir() / "toy" / "b.bin"]
    assert checked == [paths[1]]  # the structural check runs on the first download of the unpinned file only
    assert files.sha256(b) == sha256(trusted)  # recorded: known from now on without the file
    # a later retrieval must match the record
    paths[1].unlink()
    (mirror / "weights" / "toy" / "b.bin").write_bytes(b"other bytes!!")
    with pytest.raises(DownloadError, match="b.bin: checksum mismatch"):
        files.fetch(mirror=str(mirror))
    with pytest.raises(ValueError, match="not under models/other/"):
        Official("other", (a,))


def test_convert_once_converts_once_under_the_lock(tmp_path, capsys):
    calls = []

    def convert(dst):
        calls.append(dst)
        time.sleep(0.2)  # long enough for the other threads to find the lock taken
        with atomic_write(dst) as handle:
            handle.write(b"artefact")

    target = converted_dir("toy", "ab" * 32) / "model.bin"
    assert target == cache.models_dir("toy") / "converted" / ("ab" * 8) / "model.bin"
    threads = [threading.Thread(target=convert_once, args=(target, convert, "toy")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [target] and target.read_bytes() == b"artefact"
    assert capsys.readouterr().err.count("converting toy") == 1
    convert_once(target, convert, "toy")
    assert len(calls) == 1 and not target.with_name("model.bin.lock").exists()


def test_fingerprint_follows_the_file(tmp_path):
    path = tmp_path / "w.ckpt"
    path.write_bytes(b"1")
    first = fingerprint(path)
    assert len(first) == 16 and fingerprint(path) == first
    path.write_bytes(b"22")
    assert fingerprint(path) != first  # another source: another converted_dir, never a stale artefact


def test_check_keys_names_every_problem():
    with pytest.raises(ValueError) as err:
        check_keys({"a": (2,), "b": (3,), "x": (1,)}, {"a": (2,), "b": (4,), "c": (5,)}, "toy.ckpt")
    message = str(err.value)
    assert message.startswith("toy.ckpt: weights do not match the model")
    assert "1 missing (c)" in message and "1 unexpected (x)" in message
    assert "b has shape (3,), the model expects (4,)" in message
    check_keys({"a": (2,)}, {"a": (2,)}, "ok")
