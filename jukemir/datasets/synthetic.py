"""A synthetic key-detection dataset: a small, download-free stand-in for GiantSteps.

Each "song" is in one of the 24 keys and is rendered as a few short clips
(uid ``<song>-<clip>``, like ``giantsteps_clips``) so the key task's song-level
ensembling applies. A song is either a chord progression (I-IV-V-I in major,
i-iv-V-i in harmonic minor, so the leading tone tells relative keys apart) or
a scale melody over a tonic drone, played with a random additive timbre
(partial count and spectral slope), tempo, register, envelope and noise level.
Everything is drawn from ``numpy.random.default_rng(seed)``, so the same seed
gives the same files bit for bit.

Splits are by song (never by clip): per key, songs ``0..n-3`` train, ``n-2``
valid, ``n-1`` test. Labels are ``"<Tonic> <mode>"`` strings from
:data:`jukemir.datasets.KEYS`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..cache import Layout
from ..errors import UserError
from ..io import json_bytes, write_if_changed
from . import KEYS

SAMPLE_RATE = 22050
MAJOR = [0, 2, 4, 5, 7, 9, 11]
HARMONIC_MINOR = [0, 2, 3, 5, 7, 8, 11]


def _tone(freq: float, n: int, rng_partials: np.ndarray, attack: int) -> np.ndarray:
    """One note: additive partials with amplitudes ``rng_partials``, attack then exponential decay."""
    t = np.arange(n) / SAMPLE_RATE
    wave = np.zeros(n)
    for k, amp in enumerate(rng_partials, start=1):
        if freq * k < SAMPLE_RATE / 2 - 500:
            wave += amp * np.sin(2 * np.pi * freq * k * t)
    env = np.minimum(1.0, np.arange(n) / max(1, attack)) * np.exp(-3.0 * t / max(t[-1], 1e-3))
    return wave * env


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def render_song(tonic: int, minor: bool, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Render ``n_samples`` of music in the key (``tonic`` pitch class 0-11, ``minor``);
    return (audio, info)."""
    scale = HARMONIC_MINOR if minor else MAJOR
    tempo = float(rng.uniform(70, 170))
    beat = int(SAMPLE_RATE * 60 / tempo)
    n_partials = int(rng.integers(1, 9))
    partials = rng.uniform(0.05, 1.0, size=n_partials) / np.arange(1, n_partials + 1) ** rng.uniform(0.5, 2.0)
    attack = int(rng.uniform(0.002, 0.05) * SAMPLE_RATE)
    base = 12 * int(rng.integers(4, 6)) + tonic  # register of the tonic (C4..B5)
    kind = "chords" if rng.random() < 0.5 else "melody"
    audio = np.zeros(n_samples)
    pos = 0
    if kind == "chords":
        degrees = [0, 3, 4, 0]  # I-IV-V-I / i-iv-V-i
        while pos < n_samples:
            for degree in degrees:
                n = min(2 * beat, n_samples - pos)
                if n <= 0:
                    break
                triad = [scale[(degree + i) % 7] + 12 * ((degree + i) // 7) for i in (0, 2, 4)]
                inversion = int(rng.integers(0, 3))
                notes = [p + (12 if i < inversion else 0) for i, p in enumerate(triad)]
                chunk = sum(_tone(_midi_hz(base + p), n, partials, attack) for p in notes)
                chunk += 0.8 * _tone(_midi_hz(base - 12 + triad[0]), n, partials[:2], attack)
                audio[pos : pos + n] += chunk
                pos += n
    else:
        drone = 0.4 * _tone(_midi_hz(base - 12), n_samples, partials[:3], attack)
        audio += drone
        step = 0
        while pos < n_samples:
            n = min(beat // (1 + int(rng.integers(0, 2))), n_samples - pos)
            step = int(np.clip(step + rng.integers(-2, 3), -3, 10))
            note = scale[step % 7] + 12 * (step // 7)
            audio[pos : pos + n] += _tone(_midi_hz(base + note), n, partials, attack)
            pos += n
    audio /= max(np.max(np.abs(audio)), 1e-9)
    snr_db = float(rng.uniform(10, 40))
    audio += rng.normal(0, 10 ** (-snr_db / 20), n_samples)
    gain = float(rng.uniform(0.2, 0.9))
    audio = gain * audio / max(np.max(np.abs(audio)), 1e-9)
    info = {"kind": kind, "tempo": round(tempo, 2), "n_partials": len(partials), "snr_db": round(snr_db, 2)}
    return audio.astype(np.float32), info


def generate(
    out_dir: str | Path | None = None,
    *,
    songs_per_key: int = 6,
    clips_per_song: int = 2,
    clip_seconds: float = 3.0,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the synthetic dataset to ``out_dir`` (default ``processed/synthetic``); return the folder.

    Layout: ``wav/<song>-<clip>.wav`` (22,050 Hz, mono, 16-bit) and ``meta.json``
    in the schema of the original. ``songs_per_key >= 3`` (one valid and one
    test song per key). Files that already hold the same bytes are left
    untouched (so features extracted from them stay valid); others are written
    atomically, so re-running is safe.
    """
    import soundfile as sf

    if songs_per_key < 3:
        raise UserError(
            f"songs_per_key must be >= 3 (train, valid and test songs per key), got {songs_per_key}"
        )
    out_dir = Path(out_dir) if out_dir else Layout().processed("synthetic")
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_clip = int(round(clip_seconds * SAMPLE_RATE))
    meta = {}
    items = [(k, s) for k in range(24) for s in range(songs_per_key)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="generate synthetic", unit="song", dynamic_ncols=True)
    for key_idx, song in items:
        label = KEYS[key_idx]
        song_uid = f"{key_idx:02d}{song:03d}"
        audio, info = render_song(key_idx % 12, key_idx >= 12, n_clip * clips_per_song, rng)
        split = "train" if song < songs_per_key - 2 else ("valid" if song == songs_per_key - 2 else "test")
        for clip in range(clips_per_song):
            uid = f"{song_uid}-{clip}"
            buf = io.BytesIO()
            sf.write(
                buf, audio[clip * n_clip : (clip + 1) * n_clip], SAMPLE_RATE, subtype="PCM_16", format="WAV"
            )
            write_if_changed(wav_dir / f"{uid}.wav", buf.getvalue())
            meta[uid] = {
                "split": split,
                "y": label,
                "clip": {
                    "audio_uid": song_uid,
                    "audio_duration": clips_per_song * clip_seconds,
                    "clip_idx": clip,
                    "clip_offset": clip * clip_seconds,
                    "clip_duration": clip_seconds,
                },
                "extra": dict(info, seed=seed),
            }
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    write_if_changed(out_dir / "meta.json", json_bytes(meta))
    return out_dir
