"""The folder contract (docs/architecture.md) on chroma/mfcc and a tiny fake representation."""

import json
import subprocess
import sys

import numpy as np
import pytest

from jukemir.representations import Representation
from jukemir.representations.folder import STATE_DIR, FolderReport, run_folder, select_batch
from tests.conftest import write_tone


class Energy(Representation):
    """A cheap stand-in: [mean, std] of the signal; counts calls."""

    name = "energy"
    sample_rate = 8000
    dim = 2
    preferred_batch = 2

    def __init__(self):
        self.calls = 0

    def __call__(self, audio):
        self.calls += 1
        return np.array([audio.mean(), audio.std()], np.float32)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jukemir", *args], capture_output=True, text=True)


def test_select_batch():
    files = list("abcdefg")
    assert select_batch(files, None, None) == files
    assert select_batch(files, 2, 1) == ["c", "d"]
    assert select_batch(files, 3, 2) == ["g"]
    with pytest.raises(ValueError, match="invalid batch index 4"):
        select_batch(files, 2, 4)
    assert select_batch(files, 2, None) == files  # the original: no index, every file
    with pytest.raises(ValueError, match="needs --batch_size"):
        select_batch(files, None, 1)


def test_cli_batch_bad_file_and_rerun(tone_folder, tmp_path):
    (tone_folder / "t2.wav").write_bytes(b"garbage, not a wav file" * 10)  # the 3rd file is corrupt
    out = tmp_path / "out"
    # batch 1 of size 2 = the 3rd and 4th files: t2 (corrupt) and t3
    r = _cli(
        "extract",
        "mfcc",
        str(tone_folder),
        str(out),
        "--batch_size",
        "2",
        "--batch_idx",
        "1",
        "--no-progress",
    )
    assert r.returncode == 1, r.stderr
    assert sorted(p.name for p in out.glob("*.npy")) == ["t3.npy"]
    assert "t2.wav" in r.stderr and "cannot decode" in r.stderr
    assert "1 done, 0 skipped, 1 failed" in r.stderr
    log = [json.loads(line) for line in (out / STATE_DIR / "errors.jsonl").read_text().splitlines()]
    assert log[0]["file"].endswith("t2.wav") and log[0]["representation"] == "mfcc"
    # the whole folder: the others are written, t3 is skipped, t2 fails again
    r = _cli("extract", "mfcc", str(tone_folder), str(out), "--no-progress")
    assert r.returncode == 1
    assert sorted(p.name for p in out.glob("*.npy")) == ["t0.npy", "t1.npy", "t3.npy", "t4.npy"]
    assert "3 done, 1 skipped, 1 failed" in r.stderr
    for p in out.glob("*.npy"):
        x = np.load(p)
        assert x.shape == (120,) and x.dtype == np.float32
    # past the end: non-zero and a clear message, nothing written
    r = _cli("extract", "mfcc", str(tone_folder), str(out), "--batch_size", "2", "--batch_idx", "3")
    assert r.returncode != 0 and "invalid batch index 3" in r.stderr
    r = _cli("extract", "nope", str(tone_folder), str(out))
    assert r.returncode != 0 and "unknown representation 'nope'" in r.stderr


def test_all_good_exit_zero(tone_folder, tmp_path):
    r = _cli(
        "extract", "chroma", str(tone_folder), str(tmp_path / "o"), "--batch_size", "3", "--batch_idx", "1"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npy")) == ["t3.npy", "t4.npy"]


def test_skip_stale_and_provenance(tone_folder, tmp_path):
    rep = Energy()
    out = tmp_path / "out"
    report = run_folder(rep, tone_folder, out, progress=False)
    assert (report.done, report.skipped, report.ok) == (5, 0, True)
    first = {p.name: p.read_bytes() for p in out.glob("*.npy")}
    record = json.loads((out / STATE_DIR / "provenance" / "t0.json").read_text())
    assert record["representation"] == "energy" and record["source"]["name"] == "t0.wav"
    calls = rep.calls
    report = run_folder(rep, tone_folder, out, progress=False)
    assert (report.done, report.skipped, rep.calls) == (0, 5, calls)
    # a changed source makes its output stale; a corrupted output is recomputed
    write_tone(tone_folder / "t1.wav", seconds=1.0, sr=8000, freq=100)
    (out / "t4.npy").write_bytes(b"half a file")
    report = run_folder(rep, tone_folder, out, progress=False)
    assert (report.done, report.skipped, report.stale) == (2, 3, 2)
    assert (out / "t0.npy").read_bytes() == first["t0.npy"]
    assert np.load(out / "t4.npy").shape == (2,)
    # a new version of the representation invalidates everything
    rep.version = "2"
    assert run_folder(rep, tone_folder, out, progress=False).done == 5


def test_foreign_output_kept(tone_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "t0.npy", np.ones(2, np.float32))  # e.g. precomputed features dropped in
    report = run_folder(Energy(), tone_folder, out, progress=False)
    assert (report.done, report.skipped) == (4, 1)
    np.testing.assert_array_equal(np.load(out / "t0.npy"), np.ones(2))


def test_nonfinite_output_rejected_unless_allowed(tone_folder, tmp_path, capsys):
    class Bad(Energy):
        def __call__(self, audio):
            return np.array([np.inf, 1.0], np.float32)

    report = run_folder(Bad(), tone_folder, tmp_path / "a", progress=False)
    assert report.done == 0 and len(report.failed) == 5 and "non-finite" in report.failed[0][1]
    bad = Bad()
    bad.may_be_nonfinite = True
    report = run_folder(bad, tone_folder, tmp_path / "b", progress=False)
    assert report.done == 5 and report.nonfinite == 5
    assert capsys.readouterr().err.count("warning:") == 5


def test_wrong_shape_is_reported(tone_folder, tmp_path):
    class Shape(Energy):
        def __call__(self, audio):
            return np.zeros(3, np.float32)

    report = run_folder(Shape(), tone_folder, tmp_path / "p", progress=False)
    assert report.done == 0 and "expected (2,)" in report.failed[0][1]


def test_one_bad_clip_in_a_batch_does_not_sink_its_mates(tone_folder, tmp_path):
    class Fragile(Energy):
        def __call__(self, audio):
            if abs(audio.std() - 0.35) < 0.02 and self.flag:
                raise RuntimeError("model exploded")
            return super().__call__(audio)

    rep = Fragile()
    rep.flag = False
    stds = [rep(rep.load(p))[1] for p in sorted(tone_folder.iterdir())]
    assert all(abs(s - 0.35) < 0.02 for s in stds)  # all tones have std 0.5/sqrt(2)
    rep.flag = True
    report = run_folder(rep, tone_folder, tmp_path / "o", progress=False)
    assert report.done == 0 and len(report.failed) == 5 and "model exploded" in report.failed[0][1]


def test_stem_collision(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_tone(folder / "a.wav", seconds=0.5)
    write_tone(folder / "a.flac", seconds=0.5)
    report = run_folder(Energy(), folder, tmp_path / "o", progress=False)
    assert report.done == 1 and "same output name" in report.failed[0][1]


def test_held_lock_is_waited_for_and_dead_lock_file_ignored(tone_folder, tmp_path):
    import threading
    import time

    from jukemir.io import FileLock

    out = tmp_path / "o"
    locks = out / STATE_DIR / "locks"
    locks.mkdir(parents=True)
    (locks / "t1.lock").write_text("")  # left by a killed worker: nobody holds it
    held = FileLock(locks / "t0.lock")
    assert held.acquire()  # another worker busy with t0
    released = []

    def other_worker_dies():
        time.sleep(0.5)
        released.append(time.time())
        held.release()

    threading.Thread(target=other_worker_dies).start()
    report = run_folder(Energy(), tone_folder, out, progress=False)
    assert report.done == 5 and report.busy == 0 and report.ok  # t0 taken over once its lock was free
    assert (out / "t0.npy").stat().st_mtime >= released[0] - 0.05
    assert not list(locks.iterdir())


def test_reports_of_shards_merge():
    total = FolderReport("chroma", "out")
    total.merge(FolderReport("chroma", "out", done=2, skipped=1, stale=1, failed=[("a.wav", "bad")]))
    total.merge(FolderReport("chroma", "out", done=3, busy=1, foreign=2, nonfinite=1))
    assert (total.done, total.skipped, total.busy, total.stale, total.foreign, total.nonfinite) == (
        5,
        1,
        1,
        1,
        2,
        1,
    )
    assert total.failed == [("a.wav", "bad")] and not total.ok
    assert "5 done, 1 skipped, 1 failed, 1 done by another worker, 1 stale recomputed" in total.summary()
