"""The process stage (``jukemir import``): killed and resumed, it writes the same WAVs and metadata as an
uninterrupted run; a changed source is reconverted, not reused."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
import soundfile as sf

from jukemir.cache import Layout
from jukemir.datasets.process import Source, current_wav, source_record
from jukemir.io import read_json

from .helpers import (
    assert_no_survivors,
    children,
    import_args,
    run_jukemir,
    sigkill,
    start_jukemir,
    tally,
    temporaries,
    wait_for,
    write_tones,
)

pytestmark = pytest.mark.fault


def _dataset(tmp_path, n=40):
    audio = write_tones(tmp_path / "audio", n, seed=14, sr=44100, seconds=(1.0, 2.0))
    for p in sorted(audio.iterdir())[::3]:  # some FLAC and stereo sources too
        x, sr = sf.read(str(p))
        sf.write(str(p.with_suffix(".flac")), np.stack([x, x / 2], 1), sr)
        p.unlink()
    labels = tmp_path / "labels.csv"
    rows = [f"{p.name},{'ab'[i % 2]}" for i, p in enumerate(sorted(audio.iterdir()))]
    labels.write_text("file,label\n" + "\n".join(rows) + "\n")
    return audio, labels


def _assert_every_wav_vouched_for(name, audio):
    """Each WAV present has a record naming its source as it is now and the WAV's own bytes."""
    folder = Layout().processed(name)
    for wav in sorted((folder / "wav").glob("*.wav")):
        source = next(audio.glob(wav.stem + ".*"))
        record_path = folder / ".jukemir" / "sources" / (wav.stem + ".json")
        assert record_path.exists(), f"{wav.name} was committed without its record"
        assert current_wav(wav, record_path, source_record(Source(source))) is not None, wav.name
        assert read_json(record_path)["wav"]["size"] == wav.stat().st_size


def _state(name):
    folder = Layout().processed(name)
    wavs = {p.name: p.read_bytes() for p in sorted((folder / "wav").glob("*.wav"))}
    meta = (folder / "meta.json").read_bytes() if (folder / "meta.json").exists() else None
    return wavs, meta


def test_sigkill_import_and_resume(tmp_path):
    audio, labels = _dataset(tmp_path)
    r = run_jukemir(*import_args("ref", audio, labels))
    assert r.returncode == 0, r.stderr
    ref_wavs, ref_meta = _state("ref")
    assert len(ref_wavs) == 40 and ref_meta

    rng = random.Random(15)
    wav_dir = Layout().processed("killed") / "wav"
    kills = 0
    for target in sorted(rng.sample(range(0, 38), 4)):
        proc = start_jukemir(*import_args("killed", audio, labels))
        if wait_for(
            lambda target=target: wav_dir.exists() and len(list(wav_dir.glob("*.wav"))) >= target,
            proc,
            poll=0.001,
        ):
            time.sleep(rng.uniform(0, 0.01))
        kills += sigkill(proc)
        wavs, meta = _state("killed")
        assert all(data == ref_wavs[name] for name, data in wavs.items()), (
            "a WAV differs from the uninterrupted run's"
        )
        assert meta is None or meta == ref_meta
    r = run_jukemir(*import_args("killed", audio, labels))
    assert r.returncode == 0, r.stderr
    assert _state("killed") == (ref_wavs, ref_meta)
    for folder in ("wav", ".jukemir/sources"):
        assert not list((Layout().processed("killed") / folder).glob(".jukemir-tmp-*"))
    assert kills >= 3
    tally("kills", kills)
    tally("outputs_checked", len(ref_wavs))


def test_changed_source_is_reconverted(tmp_path):
    audio, labels = _dataset(tmp_path, n=6)
    r = run_jukemir(*import_args("mine", audio, labels))
    assert r.returncode == 0, r.stderr
    first, _ = _state("mine")
    source = sorted(audio.glob("*.wav"))[0]
    sf.write(str(source), np.full(8000, 0.25, np.float32), 8000, subtype="PCM_16")
    r = run_jukemir(*import_args("mine", audio, labels))
    assert r.returncode == 0, r.stderr
    wavs, _ = _state("mine")
    changed = [name for name in wavs if wavs[name] != first[name]]
    assert changed == [source.stem + ".wav"], changed
    assert sf.info(str(Layout().processed("mine") / "wav" / changed[0])).frames == 8000
    tally("stale")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill", "term", "int"])
def test_interrupted_parallel_import_keeps_wavs_and_records_together(tmp_path, sig):
    """--jobs 2, interrupted by any signal: no worker survives; every WAV left has the record that vouches for
    it; then a changed source is reconverted on the next run (a WAV without its record never is)."""
    audio, labels = _dataset(tmp_path, n=60)
    wav_dir = Layout().processed("par") / "wav"
    rng = random.Random(int(sig))
    interrupted = 0
    for target in sorted(rng.sample(range(2, 50), 3)):
        proc = start_jukemir(*import_args("par", audio, labels, jobs=2))
        workers: set = set()

        def busy(workers=workers, proc=proc, target=target):
            workers.update(children(proc.pid))
            return wav_dir.exists() and len(list(wav_dir.glob("*.wav"))) >= target and len(workers) >= 2

        if wait_for(busy, proc, poll=0.002):
            workers.update(children(proc.pid))
            os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=60)
            interrupted += 1
            if sig == signal.SIGKILL:
                assert proc.returncode == -signal.SIGKILL
            else:  # Ctrl-C and SIGTERM: a clean message and exit status, no traceback
                assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
                assert "Traceback" not in err and ("interrupted" in err or "terminated" in err), err
                assert not temporaries(Layout().processed("par")), "temporaries left behind"
        else:
            proc.communicate()
        assert_no_survivors(workers)
        _assert_every_wav_vouched_for("par", audio)
    assert interrupted >= 2
    # a source changed after the interruption is converted again, whatever was left
    source = sorted(audio.iterdir())[1]
    x, sr = sf.read(str(source))
    sf.write(str(source), 0.5 * x, sr)
    r = run_jukemir(*import_args("par", audio, labels, jobs=2))
    assert r.returncode == 0, r.stderr
    _assert_every_wav_vouched_for("par", audio)
    new, _ = sf.read(str(wav_dir / (source.stem + ".wav")))
    assert np.abs(new).max() < 0.6 * np.abs(sf.read(str(source))[0]).max() / 0.5 + 1e-3
    tally("kills", interrupted)


def test_failed_reimport_leaves_no_current_looking_metadata(tmp_path):
    """Re-importing with a file that no longer decodes: the old meta.json must not stay (it would describe
    WAVs that are no longer all there); fixing the file restores it."""
    audio, labels = _dataset(tmp_path, n=6)
    assert run_jukemir(*import_args("re", audio, labels)).returncode == 0
    folder = Layout().processed("re")
    assert (folder / "meta.json").exists() and (folder / "dataset.json").exists()
    victim = sorted(audio.iterdir())[2]
    good = victim.read_bytes()
    victim.write_bytes(b"no longer audio" * 100)
    r = run_jukemir(*import_args("re", audio, labels))
    assert r.returncode == 1 and victim.name in r.stderr
    assert not (folder / "meta.json").exists()
    victim.write_bytes(good)
    assert run_jukemir(*import_args("re", audio, labels)).returncode == 0
    assert (folder / "meta.json").exists()
    tally("bad_input")
