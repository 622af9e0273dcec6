"""Per-clip CPU time of chroma and mfcc, in both ``handcrafted_librosa`` modes.

``0.8.1`` (the default) is jukemir's re-implementation of librosa 0.8.1's
computation; ``installed`` calls the installed librosa. Clips are synthetic
(a chord with noise) at 22,050 Hz, already decoded, so only the features are
timed. Each figure is the best of ``--repeats`` passes over ``--clips`` clips,
after one warm-up pass (JIT compilation, filter banks).

    python benchmarks/handcrafted.py                      # 3 s and 30 s clips
    python benchmarks/handcrafted.py --seconds 3 --clips 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jukemir.representations import get_representation


def clips(seconds: float, n: int, sr: int = 22050) -> list[np.ndarray]:
    """``n`` peak-normalised float32 clips: a triad at a random root, plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for _ in range(n):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        x = sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * t) for s in (0, 4, 7)) + 0.1 * rng.normal(
            size=len(t)
        )
        out.append((x / np.abs(x).max()).astype(np.float32))
    return out


def per_clip_seconds(rep, audios: list[np.ndarray], repeats: int) -> float:
    rep(audios[0])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for audio in audios:
            rep(audio)
        best = min(best, (time.perf_counter() - start) / len(audios))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 30.0], help="clip lengths")
    parser.add_argument("--clips", type=int, default=8, help="clips per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the fastest counts")
    args = parser.parse_args(argv)
    print(f"{'clip':>6s}  {'representation':14s} {'0.8.1':>9s} {'installed':>10s} {'ratio':>6s}")
    for seconds in args.seconds:
        audios = clips(seconds, args.clips)
        for name in ("chroma", "mfcc"):
            times = {
                mode: per_clip_seconds(
                    get_representation(name, handcrafted_librosa=mode), audios, args.repeats
                )
                for mode in ("0.8.1", "installed")
            }
            print(
                f"{seconds:>5g}s  {name:14s} {times['0.8.1'] * 1e3:>7.1f}ms "
                f"{times['installed'] * 1e3:>8.1f}ms "
                f"{times['0.8.1'] / times['installed']:>6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
