"""The process stage (``jukemir import``): killed and resumed, it writes the same WAVs and metadata as an
uninterrupted run; a changed source is reconverted, not reused."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import soundfile as sf

from jukemir import cache

from .helpers import run_jukemir, sigkill, start_jukemir, tally, wait_for, write_tones

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


def _import(name, audio, labels):
    return ("import", name, "--audio", audio, "--labels", labels, "--task", "multiclass", "--jobs", 1, "--no-progress")


def _state(name):
    folder = cache.processed_dir(name)
    wavs = {p.name: p.read_bytes() for p in sorted((folder / "wav").glob("*.wav"))}
    meta = (folder / "meta.json").read_bytes() if (folder / "meta.json").exists() else None
    return wavs, meta


def test_sigkill_import_and_resume(tmp_path):
    audio, labels = _dataset(tmp_path)
    r = run_jukemir(*_import("ref", audio, labels))
    assert r.returncode == 0, r.stderr
    ref_wavs, ref_meta = _state("ref")
    assert len(ref_wavs) == 40 and ref_meta

    rng = random.Random(15)
    wav_dir = cache.processed_dir("killed") / "wav"
    kills = 0
    for target in sorted(rng.sample(range(0, 38), 4)):
        proc = start_jukemir(*_import("killed", audio, labels))
        if wait_for(lambda: wav_dir.exists() and len(list(wav_dir.glob("*.wav"))) >= target, proc, poll=0.001):
            time.sleep(rng.uniform(0, 0.01))
        kills += sigkill(proc)
        wavs, meta = _state("killed")
        assert all(data == ref_wavs[name] for name, data in wavs.items()), "a WAV differs from the uninterrupted run's"
        assert meta is None or meta == ref_meta
    r = run_jukemir(*_import("killed", audio, labels))
    assert r.returncode == 0, r.stderr
    assert _state("killed") == (ref_wavs, ref_meta)
    for folder in ("wav", ".jukemir/sources"):
        assert not list((cache.processed_dir("killed") / folder).glob(".jukemir-tmp-*"))
    assert kills >= 3
    tally("kills", kills)
    tally("outputs_checked", len(ref_wavs))


def test_changed_source_is_reconverted(tmp_path):
    audio, labels = _dataset(tmp_path, n=6)
    r = run_jukemir(*_import("mine", audio, labels))
    assert r.returncode == 0, r.stderr
    first, _ = _state("mine")
    source = sorted(audio.glob("*.wav"))[0]
    sf.write(str(source), np.full(8000, 0.25, np.float32), 8000, subtype="PCM_16")
    r = run_jukemir(*_import("mine", audio, labels))
    assert r.returncode == 0, r.stderr
    wavs, _ = _state("mine")
    changed = [name for name in wavs if wavs[name] != first[name]]
    assert changed == [source.stem + ".wav"], changed
    assert sf.info(str(cache.processed_dir("mine") / "wav" / changed[0])).frames == 8000
    tally("stale")
