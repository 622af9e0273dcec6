"""A full disk while writing: a clear one-line "no space left" error, non-zero exit, nothing half-written;
once space is freed a re-run completes.

The disk is a small tmpfs when this process may mount one (root), else a
file-size limit (``RLIMIT_FSIZE``: writes fail with EFBIG, handled the same way).
"""

from __future__ import annotations

import contextlib
import resource
import subprocess

import pytest

from jukemir.io import FolderClaim
from jukemir.representations.folder import STATE_DIR

from .fakes import Slow
from .helpers import (
    assert_complete,
    assert_no_corrupt,
    cli_env,
    import_args,
    outputs,
    records,
    run_jukemir,
    tally,
    temporaries,
    write_tones,
)

pytestmark = pytest.mark.fault
PAGE = 4096


@contextlib.contextmanager
def small_tmpfs(path, size):
    """Mount a ``size``-byte tmpfs at ``path``; yield False (nothing mounted) when not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk, leave_pages: int):
    """Fill ``disk`` up, then free ``leave_pages`` pages again; return the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * PAGE)
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, filler.stat().st_size - leave_pages * PAGE))
    return filler


def _check_stopped_cleanly(r, out, reference, reason):
    assert r.returncode != 0, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and reason in errors[0] and str(out) in errors[0], r.stderr
    assert_no_corrupt(out, reference)
    assert not temporaries(out), temporaries(out)
    locks = out / STATE_DIR / "locks"
    assert not (locks.exists() and any(locks.iterdir()))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    folder = write_tones(root / "in", 16, seed=5)
    r = run_jukemir("extract", "slow", folder, root / "ref", "--no-progress")
    assert r.returncode == 0, r.stderr
    return folder, outputs(root / "ref"), records(root / "ref")


@pytest.mark.parametrize("free_pages", [0, 1, 2, 5, 9, 16])
def test_full_disk_then_freed(corpus, tmp_path, free_pages):
    """The output folder's device fills up after ``free_pages`` pages.

    Each output needs 2: array + record.
    """
    folder, reference, reference_records = corpus
    disk = tmp_path / "disk"
    with small_tmpfs(disk, 64 * PAGE) as mounted:
        if not mounted:  # no tmpfs here: a file-size limit instead
            return _file_size_limit(folder, reference, reference_records, disk / "out", limit=free_pages * 40)
        out = disk / "out"
        filler = fill(disk, free_pages)
        r = run_jukemir("extract", "slow", folder, out, "--no-progress")
        _check_stopped_cleanly(r, out, reference, "no space left on device")
        assert len(outputs(out)) <= free_pages // 2
        filler.unlink()
        r = run_jukemir("extract", "slow", folder, out, "--no-progress")
        assert r.returncode == 0, r.stderr
        assert_complete(out, reference, reference_records)
    tally("disk_full")
    tally("outputs_checked", len(reference))


def test_full_disk_while_logging_an_error(tmp_path):
    """The error log itself cannot be written: still one clear line, and the log is not left half a line."""
    folder = write_tones(tmp_path / "in", 3, seed=6)
    (folder / "a_corrupt.wav").write_bytes(b"RIFF" + bytes(60))
    disk = tmp_path / "disk"
    with small_tmpfs(disk, 16 * PAGE) as mounted:
        out = disk / "out"
        out.mkdir(parents=True)
        with FolderClaim(out / STATE_DIR, Slow().provenance(), "slow"):  # the folder is already this run's
            pass
        if not mounted:
            r = run_jukemir("extract", "slow", folder, out, "--no-progress", preexec_fn=_limit(8))
        else:
            fill(disk, 0)
            r = run_jukemir("extract", "slow", folder, out, "--no-progress")
        assert r.returncode != 0
        reason = "no space left on device" if mounted else "file too large"
        assert any(reason in line and "errors.jsonl" in line for line in r.stderr.splitlines()), r.stderr
        log = out / STATE_DIR / "errors.jsonl"
        assert not log.exists() or log.read_bytes() == b""
    tally("disk_full")


def _limit(nbytes):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return set_limit


def _file_size_limit(folder, reference, reference_records, out, limit):
    out.mkdir(parents=True)
    r = run_jukemir("extract", "slow", folder, out, "--no-progress", preexec_fn=_limit(limit))
    _check_stopped_cleanly(r, out, reference, "file too large")
    r = run_jukemir("extract", "slow", folder, out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert_complete(out, reference, reference_records)
    tally("disk_full")
    tally("outputs_checked", len(reference))


@pytest.mark.parametrize("limit", [0, 200])
def test_file_size_limit(corpus, tmp_path, limit):
    """``RLIMIT_FSIZE`` (EFBIG) is reported like a full disk.

    Stop, name the file, leave nothing half-written.
    """
    folder, reference, reference_records = corpus
    _file_size_limit(folder, reference, reference_records, tmp_path / "out", limit)


def test_probe_full_disk_then_freed(tmp_path):
    """Saving probe runs on a full disk: one clear line, exit 2, no run taken for finished.

    Then it completes.
    """
    from jukemir.cache import Layout
    from jukemir.probe.grid import grid_cfgs, write_grid_configs

    from .helpers import cli_env, make_probe_dataset, probe_args

    make_probe_dataset("faulty", "slow", n=45)
    cfgs = grid_cfgs("faulty", "slow", {"learning_rate": [1e-2, 1e-3], "early_stopping_boredom": [3]})
    args = probe_args("faulty", "slow", write_grid_configs(cfgs, tmp_path / "cfgs"))
    env = cli_env(OMP_NUM_THREADS=1)
    runs = Layout().probes("faulty", "slow")
    with small_tmpfs(runs, 16 * PAGE) as mounted:
        if mounted:
            fill(runs, 1)
            r = run_jukemir(*args, env=env)
            (runs / "filler").unlink()
        else:
            r = run_jukemir(*args, env=env, preexec_fn=_limit(200))  # cfg.json is larger
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        reason = "no space left on device" if mounted else "file too large"
        assert len(errors) == 1 and reason in errors[0] and "run the same command again" in errors[0], (
            r.stderr
        )
        assert not list(runs.glob("*/metrics.json")) and not list(runs.rglob(".jukemir-tmp-*"))
        r = run_jukemir(*args, env=env)
        assert r.returncode == 0, r.stderr
        assert "2 trained, 0 already done" in r.stdout
        assert len(list(runs.glob("*/metrics.json"))) == 2
    tally("disk_full")


@pytest.mark.parametrize("jobs", [1, 2])
def test_import_on_a_full_disk(tmp_path, jobs):
    """import/process writes WAVs: a full disk (or a file-size limit) is the same one-line error as extract,
    no traceback from the audio writer, no half files; freed, the import completes as an uninterrupted one."""
    audio = write_tones(tmp_path / "audio", 12, seed=8, sr=44100, seconds=(1.0, 1.5))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "file,label\n" + "\n".join(f"{p.name},{'ab'[i % 2]}" for i, p in enumerate(sorted(audio.iterdir())))
    )
    args = import_args("d", audio, labels, jobs)
    r = run_jukemir(*args, env=cli_env(JUKEMIR_CACHE_DIR=tmp_path / "ref"))
    assert r.returncode == 0, r.stderr
    reference = {p.name: p.read_bytes() for p in (tmp_path / "ref" / "processed" / "d" / "wav").glob("*.wav")}
    disk = tmp_path / "disk"
    with small_tmpfs(disk, 640 * PAGE) as mounted:  # the whole dataset needs about 400 pages
        env = cli_env(JUKEMIR_CACHE_DIR=disk / "cache")
        if mounted:
            filler = fill(disk, 40)  # room for a few WAVs (about 24 pages each)
            r = run_jukemir(*args, env=env)
            reason = "no space left on device"
        else:
            r = run_jukemir(*args, env=env, preexec_fn=_limit(60_000))  # smaller than one WAV
            reason = "file too large"
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and reason in errors[0], r.stderr
        assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
        out = disk / "cache" / "processed" / "d"
        assert not temporaries(out) and not (out / "meta.json").exists()
        wavs = {p.name: p.read_bytes() for p in (out / "wav").glob("*.wav")}
        assert all(data == reference[name] for name, data in wavs.items())
        if mounted:
            filler.unlink()
        r = run_jukemir(*args, env=env)
        assert r.returncode == 0, r.stderr
        assert {p.name: p.read_bytes() for p in (out / "wav").glob("*.wav")} == reference
    tally("disk_full")
    tally("outputs_checked", len(reference))
