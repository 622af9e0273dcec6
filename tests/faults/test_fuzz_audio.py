"""Fuzz THE audio loader: truncated files, flipped bytes, tampered headers, random bytes behind real magic.

Every file must give valid audio or an ``AudioError`` whose message is one line
naming the file: never another exception, a hang or a crash. The loader runs
in a child process so that a crash or hang is caught and the file named.
"""

from __future__ import annotations

import io
import random
import select
import struct
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from .helpers import REPO, cli_env, tally

pytestmark = pytest.mark.fault
SEED = 8
CASE_TIMEOUT_S = 20.0


def _encode(audio, sr, **kwargs) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, **kwargs)
    return buf.getvalue()


def seeds() -> dict[str, bytes]:
    """Small valid files of each container and codec the loader meets."""
    rng = np.random.default_rng(SEED)
    t = np.arange(2000) / 8000
    mono = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    stereo = np.stack([mono, -mono[::-1]], axis=1)
    out = {
        "pcm16.wav": _encode(mono, 8000, format="WAV", subtype="PCM_16"),
        "float.wav": _encode(stereo, 44100, format="WAV", subtype="FLOAT"),
        "pcm24.wav": _encode(stereo, 22050, format="WAV", subtype="PCM_24"),
        "u8.wav": _encode(mono, 11025, format="WAV", subtype="PCM_U8"),
        "rf64.wav": _encode(mono, 8000, format="RF64", subtype="PCM_16"),
        "x.flac": _encode(stereo, 16000, format="FLAC", subtype="PCM_16"),
        "x.ogg": _encode(mono, 22050, format="OGG", subtype="VORBIS"),
        "x.aiff": _encode(mono, 8000, format="AIFF", subtype="PCM_16"),
        "x.mp3": _encode(np.tile(mono, 4), 22050, format="MP3"),
    }
    # a longer stereo 44.1 kHz mp3 with an ID3v2 tag in front, like music files in the wild (generated, so
    # the fault suite needs nothing beside the repository)
    t = np.arange(5 * 44100) / 44100
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.standard_normal(len(t))
    song = np.stack([chirp, np.roll(chirp, 441)], axis=1).astype(np.float32)
    title = b"\x00jukemir fuzz"  # encoding byte, then the text
    frame = b"TIT2" + len(title).to_bytes(4, "big") + b"\x00\x00" + title
    id3 = b"ID3\x03\x00\x00" + len(frame).to_bytes(4, "big") + frame  # sizes under 128: syncsafe as is
    out["tagged.mp3"] = id3 + _encode(song, 44100, format="MP3")
    return out


def _wav_header(rng) -> bytes:
    """A RIFF/WAVE header with implausible fields, followed by a little data."""
    fmt = rng.choice([1, 3, 0xFFFE, 0, 2, 0x55, 7])
    channels = rng.choice([0, 1, 2, 255, 65535])
    rate = rng.choice([0, 1, 7, 8000, 2**31 - 1, 2**32 - 1])
    bits = rng.choice([0, 1, 7, 8, 13, 16, 24, 32, 64, 65535])
    align = rng.choice([0, 1, channels * max(bits, 8) // 8 % 65536, 65535])
    data_size = rng.choice([0, 1, 7, 100, 2**31, 2**32 - 1])
    data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 3, 64, 1000])))
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * align % 2**32, align, bits)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt_chunk))
        + fmt_chunk
        + b"data"
        + struct.pack("<I", data_size)
        + data
    )
    return b"RIFF" + struct.pack("<I", rng.choice([len(body), 0, 2**32 - 1])) + body


def _flac_header(rng, seed_flac: bytes) -> bytes:
    """A real FLAC with STREAMINFO fields (rate, channels, bits, total samples) overwritten at random."""
    data = bytearray(seed_flac)
    info = 8  # 'fLaC' + 4-byte block header, then STREAMINFO
    packed = rng.getrandbits(64)
    data[info + 10 : info + 18] = packed.to_bytes(8, "big")
    return bytes(data[: rng.choice([len(data), 42, 60, 200])])


def corpus() -> dict[str, bytes]:
    """The fuzz cases, name -> bytes (deterministic for SEED)."""
    rng = random.Random(SEED)
    cases = {}
    base = seeds()
    for name, data in base.items():
        n = len(data)
        for cut in sorted(
            {1, 2, 3, 4, 8, 11, 12, 16, 36, 44, 45, 64, 100, n // 2, n - 1, *rng.sample(range(1, n), 12)}
        ):
            if cut < n:
                cases[f"trunc{cut}_{name}"] = data[:cut]
        for keep in (4, 12, 44, 64, 128, 512):
            if keep < n:
                tail = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 16, 300, 3000])))
                cases[f"head{keep}+random_{name}"] = data[:keep] + tail
        for k in range(12):
            flipped = bytearray(data)
            hot = min(n, 256) if k % 2 == 0 else n  # half the flips land in the header
            for _ in range(rng.choice([1, 2, 8, 32])):
                flipped[rng.randrange(hot)] = rng.getrandbits(8)
            cases[f"flip{k}_{name}"] = bytes(flipped)
        cases[f"doubled_{name}"] = data + data
    for k in range(40):
        cases[f"wavheader{k}.wav"] = _wav_header(rng)
    for k in range(20):
        cases[f"flacheader{k}.flac"] = _flac_header(rng, base["x.flac"])
    for k, magic in enumerate(
        [
            b"",
            b"RIFF",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"fLaC",
            b"OggS",
            b"ID3\x03\x00",
            b"\xff\xfb\x90\x00",
            b"FORM\x00\x00\x00\x00AIFF",
            b"RIFF\xff\xff\xff\xffRF64",
        ]
        * 4
    ):
        cases[f"random{k}.bin"] = magic + bytes(
            rng.getrandbits(8) for _ in range(rng.choice([0, 1, 10, 500, 5000]))
        )
    cases["text.wav"] = b"this is a text file, not audio\n" * 10
    return cases


def test_fuzz_audio_loader(tmp_path):
    cases = corpus()
    paths = []
    for i, (name, data) in enumerate(sorted(cases.items())):
        path = tmp_path / f"{i:04d}_{name}"
        path.write_bytes(data)
        paths.append(str(path))
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths))

    proc = subprocess.Popen(
        [sys.executable, "-m", "faults.fuzz_worker", str(listing)],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results, current, last = {}, None, time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                assert time.monotonic() - last < CASE_TIMEOUT_S, f"the loader hangs on {paths[current]}"
                continue
            line = proc.stdout.readline()
            if not line:
                break
            kind, i, rest = (line.rstrip("\n").split(" ", 2) + [""])[:3]
            last = time.monotonic()
            if kind == "BEGIN":
                current = int(i)
            else:
                results[int(i)] = (kind, rest)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.communicate()[1]
    assert proc.returncode == 0, (
        f"the loader crashed (status {proc.returncode}) on {paths[current]}: {stderr[-2000:]}"
    )
    assert len(results) == len(paths)
    bad = [
        f"{paths[i]}: {kind} {rest}"
        for i, (kind, rest) in sorted(results.items())
        if kind not in ("OK", "AUDIOERROR")
    ]
    assert not bad, f"{len(bad)} of {len(paths)} files broke the loader's contract:\n" + "\n".join(bad[:20])
    kinds = Counter(kind for kind, _ in results.values())
    assert kinds["OK"] > 50 and kinds["AUDIOERROR"] > 100, kinds  # both outcomes are exercised
    tally("fuzz", len(paths))
