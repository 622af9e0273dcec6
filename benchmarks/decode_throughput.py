"""Decoding throughput: clips/s of the audio loader with N threads, after warm-up.

Resampling is kaiser_best.

Writes ``--clips`` synthetic music-like clips (``--seconds`` long, default 30 s
at 22,050 Hz, 16-bit WAV, as GTZAN) and decodes them as Jukebox does: mono,
44.1 kHz, peak-normalised, first 25 s. Two resamplers:

* ``new``: :func:`jukemir.audio.load_audio`, i.e. :mod:`jukemir.sinc` (numpy);
* ``old``: the same decode with ``librosa.resample(..., res_type="kaiser_best")``
  (resampy's numba kernel), what the loader did before.

Each is warmed up first (one clip decoded and resampled untimed: resampy
compiles its kernel on the first call, which the old benchmark timed as
decoding), then timed on all clips with a pool of ``--workers`` threads. The
first (cold) call is printed separately. The outputs of old and new are
compared (max abs difference).

    python benchmarks/decode_throughput.py                       # 1 and 2 threads, 16 clips
    python benchmarks/decode_throughput.py --workers 16 --clips 64
    # + new vs resampy on a real file, all rates: an audio file, or the name of an asset (default: the
    # example mp3 of musicnn's repository), fetched with the asset resolver ($JUKEMIR_MIRROR or download)
    python benchmarks/decode_throughput.py --check [AUDIO_FILE_OR_ASSET]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jukemir import audio as A
from jukemir import sinc

CROP_SECONDS = 25
TARGET_SR = 44100
EXAMPLE_ASSET = "EXAMPLE_MUSICNN_JORAM"  # a real 30 s mp3 at 16 kHz (musicnn's example clip)
RATES = [
    (22050, 44100),
    (16000, 44100),
    (44100, 22050),
    (16000, 22050),
    (22050, 16000),
    (44100, 16000),
    (48000, 44100),
    (48000, 22050),
    (48000, 16000),
]


def write_clips(folder: Path, n: int, seconds: float, sr: int = 22050) -> list[Path]:
    """``n`` music-like 16-bit WAV clips, distinct per clip.

    Harmonic notes with decays over a noise floor.
    """
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        x = 0.02 * rng.standard_normal(len(t))
        for _ in range(6):
            f0, onset = 55.0 * 2 ** (rng.integers(0, 48) / 12), rng.uniform(0, seconds * 0.8)
            env = np.where(t >= onset, np.exp(-2.0 * (t - onset)), 0.0)
            for h in range(1, min(8, int(sr / 2 / f0)) + 1):
                x += env * np.sin(2 * np.pi * f0 * h * t) / h
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, (0.8 * x / np.abs(x).max()).astype(np.float32), sr, subtype="PCM_16")
        paths.append(path)
    return paths


def decode_new(path, sample_rate: int = TARGET_SR, crop: int = CROP_SECONDS) -> np.ndarray:
    """Jukebox's decode: :func:`jukemir.audio.load_audio` at 44.1 kHz, normalised, first 25 s."""
    return A.load_audio(path, sample_rate, normalize=True, resampler="kaiser_best")[: crop * sample_rate]


def decode_old(path, sample_rate: int = TARGET_SR, crop: int = CROP_SECONDS) -> np.ndarray:
    """The same decode with the resampling done by librosa/resampy (numba), as before jukemir.sinc."""
    import librosa

    x = A.load_audio(path)
    sr = A.audio_info(path)[0]
    if sr != sample_rate:
        x = librosa.resample(x, orig_sr=sr, target_sr=sample_rate, res_type="kaiser_best").astype(np.float32)
    peak = float(np.abs(x).max())
    return (x / peak if peak > 0 else x)[: crop * sample_rate]


def measure(decode, files: list, workers: int) -> tuple[float, float, list]:
    """``(cold seconds of the first call, clips/s warm with workers threads, outputs)``."""
    t0 = time.perf_counter()
    decode(files[0])
    cold = time.perf_counter() - t0
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, files[:workers]))  # every thread warm
        t0 = time.perf_counter()
        out = list(pool.map(decode, files))
        seconds = time.perf_counter() - t0
    return cold, len(files) / seconds, out


def real_file(name: str) -> Path:
    """``name`` itself if it is a file, else the asset of that tag, verified, through the asset resolver."""
    from jukemir.assets import get_asset, retrieve

    return Path(name) if Path(name).is_file() else retrieve(get_asset(name))


def check_file(path: Path) -> None:
    """New vs resampy (the installed one, via librosa) on a real file at the project's rates.

    Like for like: ``jukemir.sinc`` computes the installed resampy's filters here ("0.4" for resampy
    >= 0.3), not the original's 0.2.2 ones the loader uses (those are checked in ``tests/test_sinc.py``).
    """
    import librosa

    x = A.load_audio(path)
    native = A.audio_info(path)[0]
    installed = _resampy_version()
    generation = "0.2" if installed.startswith(("0.1", "0.2")) else "0.4"
    print(
        f"fidelity on {path.name} ({native} Hz, {len(x) / native:.1f} s), "
        f"max |new as resampy {generation} - librosa/resampy {installed}|:"
    )
    for target in (44100, 22050, 16000):
        if target == native:
            continue
        ref = librosa.resample(x, orig_sr=native, target_sr=target, res_type="kaiser_best")
        new = sinc.resample(x, native, target, version=generation)
        print(
            f"  {native} -> {target}: {np.abs(new - ref).max():.3g} "
            f"(identical samples {np.mean(new == ref):.6f})"
        )


def _resampy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resampy")
    except PackageNotFoundError:
        return "(not installed)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30.0, help="clip length, written at --sr")
    p.add_argument("--sr", type=int, default=22050, help="rate of the written clips")
    p.add_argument("--workers", default="1,2", help="comma-separated thread counts")
    p.add_argument("--which", default="new,old", help="comma-separated: new, old")
    p.add_argument(
        "--rates", action="store_true", help="also time one thread per project rate pair (new vs old)"
    )
    p.add_argument(
        "--check",
        nargs="?",
        const=EXAMPLE_ASSET,
        default=None,
        metavar="FILE_OR_ASSET",
        help=f"new vs resampy at 44.1/22.05/16 kHz on an audio file or asset (default {EXAMPLE_ASSET})",
    )
    args = p.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load avg {os.getloadavg()[0]:.1f}; "
        f"jukemir.sinc as resampy {A.RESAMPY_VERSION}, old: resampy {_resampy_version()} via librosa"
    )
    if args.check:
        check_file(real_file(args.check))
    decoders = {"new": decode_new, "old": decode_old}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_clips(Path(tmp), args.clips, args.seconds, args.sr)
        outputs = {}
        print(
            f"decode ({args.clips} clips of {args.seconds:.0f} s at {args.sr} Hz -> {TARGET_SR} Hz, "
            f"kaiser_best, "
            f"normalised, first {CROP_SECONDS} s), warm:"
        )
        for name in args.which.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                cold, rate, out = measure(decoders[name], files, workers)
                outputs[name] = out
                print(
                    f"  {name}: {workers:2d} threads {rate:7.2f} clips/s   (first call, cold: {cold:.2f} s)"
                )
        if len(outputs) == 2:
            diff = max(float(np.abs(a - b).max()) for a, b in zip(outputs["new"], outputs["old"]))
            print(f"  max |new - old| over the clips: {diff:.3g}")
    if args.rates:
        import librosa

        print("one thread, one 30 s clip of noise, seconds per clip (new / old resampy, warm):")
        rng = np.random.default_rng(1)
        for a, b in RATES:
            x = rng.uniform(-1, 1, 30 * a).astype(np.float32)
            new = functools.partial(sinc.resample, x, a, b, version=A.RESAMPY_VERSION)
            old = functools.partial(librosa.resample, x, orig_sr=a, target_sr=b, res_type="kaiser_best")
            times = []
            for fn in (new, old):
                fn()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            print(f"  {a:>6} -> {b:>6}: {times[0]:.3f} / {times[1]:.3f} s ({times[1] / times[0]:.1f}x)")


if __name__ == "__main__":
    main()
