"""Shared fixtures: an isolated cache per test, the real files the tests need, small audio folders.

Real files (the choi and musicnn weights, the paper's metadata, a real mp3) are
obtained the way a user obtains them: through the package's own checksummed
asset resolver, from the asset mirror named by ``$JUKEMIR_MIRROR`` when it is
set (CI sets it to a local copy), else downloaded from their public homes. They
are kept once per checkout (pytest's cache folder), so a second run needs
neither. Without a mirror or network such a test fails and says how to provide
them; it never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jukemir.assets import DownloadError, get_asset, retrieve

# The mirror the tests may read real files from. Captured once: each test then runs without it
# (``isolated_cache``), so a test only ever uses a mirror it sets itself.
ASSET_MIRROR = os.environ.get("JUKEMIR_MIRROR") or None
EXAMPLE_CLIP = "EXAMPLE_MUSICNN_JORAM"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own ``$JUKEMIR_CACHE_DIR`` (nothing touches ~/.jukemir) and no mirror."""
    root = tmp_path / "cache"
    monkeypatch.setenv("JUKEMIR_CACHE_DIR", str(root))
    monkeypatch.delenv("JUKEMIR_MIRROR", raising=False)
    return root


@pytest.fixture(scope="session")
def assets_root(request, tmp_path_factory) -> Path:
    """Where the tests keep real files: pytest's cache folder (kept between runs), else a temporary one."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("jukemir-assets")) if cache is not None else tmp_path_factory.mktemp("assets")


def pip(*args: str) -> None:
    """Run this interpreter's pip quietly (``pip("install", "--no-deps", "--target", DIR, "pkg==1")``)."""
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    )


def fetch_assets(assets, root: Path) -> list[Path]:
    """Retrieve ``assets`` (checksummed) into ``root``; fail the test with how to provide them."""
    try:
        return [
            retrieve(a, root, mirror=ASSET_MIRROR, retries=1, backoff=0.5, progress=False) for a in assets
        ]
    except DownloadError as exc:
        pytest.fail(
            f"this test needs real files that could not be obtained: {exc}. Set JUKEMIR_MIRROR to a jukemir "
            "asset mirror folder or URL (CI sets it to the mirror beside its checkout), "
            "or run the tests with network access to GitHub.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def real_clip(assets_root) -> Path:
    """A real mp3 (30 s, 16 kHz stereo): the example clip of musicnn's repository."""
    return fetch_assets([get_asset(EXAMPLE_CLIP)], assets_root)[0]


@pytest.fixture(scope="session")
def choi_dir(assets_root) -> Path:
    """The folder of Choi et al.'s five real weight files."""
    from jukemir.representations.choi import official

    return fetch_assets(official().assets, assets_root)[0].parent


@pytest.fixture(scope="session")
def musicnn_dir(assets_root) -> Path:
    """A folder of musicnn checkpoints.

    ``MSD_musicnn/`` and ``MTT_musicnn/`` whole, ``MSD_musicnn_big/`` its index.

    (The big model's 96 MB data file is not needed by any test.)
    """
    from jukemir.representations.musicnn import official

    wanted = official("MSD_musicnn").assets + official("MTT_musicnn").assets
    wanted += tuple(a for a in official("MSD_musicnn_big").assets if a.path_rel.endswith(".index"))
    return fetch_assets(wanted, assets_root)[0].parent.parent


@pytest.fixture(scope="session")
def paper_metadata(assets_root) -> Path:
    """The folder of the paper's four processed metadata files (``<name>.json.gz``)."""
    names = ["gtzan_ff", "magnatagatune", "giantsteps_clips", "emomusic"]
    return fetch_assets([get_asset(f"METADATA_{n}") for n in names], assets_root)[0].parent


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
