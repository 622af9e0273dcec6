"""Shared fixtures: an isolated cache per test, the real files (weights, an MP3), small audio folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CLIP = next(iter(sorted((SHARED / "audio").glob("*.mp3"))), None) if (SHARED / "audio").exists() else None


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own ``$JUKEMIR_CACHE_DIR`` so nothing touches ~/.jukemir."""
    root = tmp_path / "cache"
    monkeypatch.setenv("JUKEMIR_CACHE_DIR", str(root))
    return root


@pytest.fixture
def shared_dir() -> Path:
    assert SHARED.exists(), f"{SHARED} is missing: the tests need ../shared beside the repository"
    return SHARED


@pytest.fixture
def real_clip() -> Path:
    assert REAL_CLIP is not None, f"no mp3 in {SHARED / 'audio'}"
    return REAL_CLIP


def write_tone(path, seconds=2.0, sr=22050, freq=440.0, channels=1, amplitude=0.5):
    """Write a sine tone WAV (16-bit) and return its path."""
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    x = amplitude * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
    return Path(path)


@pytest.fixture
def tone_folder(tmp_path):
    """Five 1.5 s tones ``t0.wav``..``t4.wav`` at 22,050 Hz and 16 kHz."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        write_tone(folder / f"t{i}.wav", seconds=1.5, sr=22050 if i % 2 == 0 else 16000, freq=220 * (i + 1))
    return folder
