"""Regenerate ``tests/data/handcrafted_librosa081.npz``.

The original's chroma and mfcc, from librosa 0.8.1 itself.

The original computed its hand-crafted features with librosa 0.8.1
(docs/fidelity/chroma.md, mfcc.md); jukemir re-implements that computation
(``jukemir/representations/librosa081.py``) so that it needs no old librosa.
This script computes the reference with the real librosa 0.8.1, in a second
Python environment, on inputs the tests can rebuild:

* synthetic signals made by :func:`signals` (numpy only, seeded): noise, a sweep,
  a detuned chord, a bass line, a click in silence, silence, an odd length,
  the shortest clip jukemir accepts;
* the real clip ``EXAMPLE_MUSICNN_JORAM`` (a 30 s mp3 at 16 kHz, sha256 pinned by
  its asset), fetched through jukemir's asset resolver and decoded by jukemir's
  loader (``load_audio(path, 22050, normalize=True)``), so that only the feature
  code differs.

It stores, per input (in the order of ``names``), the sha256 of the float32
samples, librosa 0.8.1's estimated tuning, and the 72 chroma and 120 mfcc
statistics (the original's
``main.py``: mean and population std of the features and their first and
second differences); also the taps of resampy 0.2's ``kaiser_fast`` filter that
halving the rate uses. Then it prints how far jukemir is from the reference, in
both ``handcrafted_librosa`` modes, and whether its tuning and CQT are
bit-identical.

The reference environment (Python 3.11; librosa 0.8.1 runs there unpatched with
numpy < 1.24, which still has ``np.complex``)::

    python3.11 -m venv /tmp/librosa081
    /tmp/librosa081/bin/pip install librosa==0.8.1 resampy==0.2.2 numpy==1.23.5 \\
        scipy==1.10.1 numba==0.58.1 soundfile

resampy 0.2.2 is the one of mid-2021 (the original left resampy unpinned);
resampy >= 0.3 ships other filters. scipy 1.6.3 (the original's) has no wheel
for Python 3.11; nothing this script exercises changed between 1.6 and 1.10
beyond rounding. Then, from the repository root, in jukemir's environment::

    python tools/make_handcrafted_reference.py --python /tmp/librosa081/bin/python --mirror /path/to/mirror

(``--mirror``: a jukemir asset mirror; default ``$JUKEMIR_MIRROR``, else the
clip is downloaded.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "handcrafted_librosa081.npz"
CLIP_ASSET = "EXAMPLE_MUSICNN_JORAM"
SR = 22050
HOP = 512
VERSIONS = {"librosa": "0.8.1", "resampy": "0.2.2"}  # the reference environment must have these


def _peak_normalised(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    peak = np.abs(x).max()
    return x / peak if peak > 0 else x


def signals() -> dict[str, np.ndarray]:
    """The synthetic inputs: name -> float32 mono audio at 22,050 Hz, peak-normalised like the loader's."""
    rng = np.random.RandomState(20210701)
    t = np.arange(4 * SR) / SR
    out = {"noise": _peak_normalised(rng.randn(3 * SR))}
    rate = np.log(10000.0 / 30.0) / 4.0  # exponential sweep, 30 Hz to 10 kHz in 4 s
    out["sweep"] = _peak_normalised(np.sin(2 * np.pi * 30.0 * (np.exp(rate * t) - 1) / rate))
    # C major triad with 3 harmonics, tuned to A = 443 Hz (+0.12 semitone), decaying, light noise.
    tt = t[: 3 * SR]
    chord = sum(
        np.sin(2 * np.pi * 443.0 * 2 ** (s / 12) * h * tt) / h for s in (-9, -5, -2) for h in (1, 2, 3)
    )
    out["chord"] = _peak_normalised(chord * np.exp(-tt) + 0.01 * rng.randn(len(tt)))
    # Bass line in the lowest CQT octaves (E1 to E2, a quarter second each), tuned 30 cents flat.
    notes = 41.2 * 2 ** ((np.array([0, 3, 5, 7, 10, 12, 7, 0]) - 0.3) / 12)
    bass = np.concatenate([np.sin(2 * np.pi * f * t[: SR // 4]) * np.hanning(SR // 4) for f in notes])
    out["bass"] = _peak_normalised(bass + 0.05 * np.sin(2 * np.pi * 2000.0 * t[: len(bass)]))
    click = np.zeros(2 * SR)
    click[SR : SR + 2] = (1.0, -0.5)
    out["click"] = _peak_normalised(click)
    out["silence"] = np.zeros(SR, dtype=np.float32)
    odd = 2 * SR + 333  # odd at every halving: each octave appends a zero
    out["odd"] = _peak_normalised(rng.randn(odd) * np.sin(2 * np.pi * 3.0 * t[:odd]))
    out["shortest"] = _peak_normalised(np.sin(2 * np.pi * 261.6 * t[: 3 * HOP]) + 0.1 * rng.randn(3 * HOP))
    return out


def sha256(audio: np.ndarray) -> str:
    """sha256 of the float32 samples."""
    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def delta_statistics(frames: np.ndarray) -> np.ndarray:
    """The original's summary: mean, population std of diff(frames, n=i), i = 0, 1, 2, concatenated."""
    stats = []
    for i in (0, 1, 2):
        diff = np.diff(frames, n=i, axis=1)
        stats += [diff.mean(axis=1), diff.std(axis=1)]
    return np.concatenate(stats)


def reference(inputs: Path, outputs: Path) -> None:
    """In the librosa 0.8.1 environment: features of every array in ``inputs`` (.npz) into ``outputs``."""
    import warnings

    warnings.filterwarnings("ignore")  # np.complex deprecation, "n_fft too large", empty tuning set
    import librosa
    import numba
    import resampy
    import scipy

    found = {"librosa": librosa.__version__, "resampy": resampy.__version__}
    if found != VERSIONS:
        raise SystemExit(f"the reference environment needs {VERSIONS}, found {found}")
    half, precision, rolloff = resampy.filters.get_filter("kaiser_fast")
    versions = dict(found, python=sys.version.split()[0], numpy=np.__version__)
    versions.update(scipy=scipy.__version__, numba=numba.__version__)
    result = {
        "versions": json.dumps(versions),
        "kaiser_fast_022_taps": half[:: precision // 2],
        "kaiser_fast_022_rolloff": np.float64(rolloff),
    }
    for name, y in np.load(inputs).items():
        tuning = librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=36)
        chroma = librosa.feature.chroma_cqt(y, sr=SR, hop_length=HOP)
        mfcc = librosa.feature.mfcc(y, sr=SR, hop_length=HOP)
        assert chroma.dtype == np.float32 and mfcc.dtype == np.float32  # as the original asserted
        result[f"{name}/tuning"] = np.float64(tuning)
        result[f"{name}/cqt"] = librosa.cqt(
            y, sr=SR, hop_length=HOP, n_bins=252, bins_per_octave=36, tuning=tuning
        )
        result[f"{name}/chroma"] = delta_statistics(chroma).astype(np.float32)
        result[f"{name}/mfcc"] = delta_statistics(mfcc).astype(np.float32)
    np.savez(outputs, **result)


def real_clip(mirror: str | None) -> np.ndarray:
    """The real clip as the representations get it: jukemir's loader at 22,050 Hz, peak-normalised."""
    sys.path.insert(0, str(ROOT))
    from jukemir.assets import get_asset, retrieve
    from jukemir.audio import load_audio

    with tempfile.TemporaryDirectory() as scratch:
        path = retrieve(get_asset(CLIP_ASSET), scratch, mirror=mirror, progress=False)
        return load_audio(path, SR, normalize=True)


def compare(inputs: dict, computed: dict) -> None:
    """Print jukemir's distance to the reference, in both modes.

    And whether its tuning and CQT are librosa 0.8.1's.
    """
    import warnings

    sys.path.insert(0, str(ROOT))
    from jukemir.representations import get_representation, librosa081

    reps = {
        (name, mode): get_representation(name, handcrafted_librosa=mode)
        for name in ("chroma", "mfcc")
        for mode in ("0.8.1", "installed")
    }
    print(f"{'input':9s} {'tuning':>7s} {'cqt bits':>8s}  " + "  ".join(f"{n} {m:>9s}" for n, m in reps))
    for name, audio in inputs.items():
        tuning = librosa081.estimate_tuning(audio, SR)
        same_tuning = tuning == float(computed[f"{name}/tuning"])
        cqt = librosa081.cqt(audio, SR, HOP, librosa081.C1_HZ * 2.0 ** (tuning / 36))
        same_cqt = np.array_equal(cqt, computed[f"{name}/cqt"])
        errors = []
        for (rep_name, _), rep in reps.items():
            ref = computed[f"{name}/{rep_name}"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the installed librosa's "n_fft too large" on short clips
                err = np.abs(rep(audio).astype(np.float64) - ref).max()
            errors.append(
                f"{err:>16.2e}" if not ref.any() else f"{err:>9.2e} ({err / np.abs(ref).max():.0e})"
            )
        print(
            f"{name:9s} {'same' if same_tuning else 'DIFFER':>7s} {'same' if same_cqt else 'DIFFER':>8s}  "
            + "  ".join(errors)
        )
    print("(max abs error of the 72/120 statistics, and in brackets relative to their largest magnitude)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="the librosa 0.8.1 environment's python")
    parser.add_argument("--mirror", default=None, help="jukemir asset mirror (default: $JUKEMIR_MIRROR)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default: {OUT.relative_to(ROOT)}")
    parser.add_argument(
        "--reference", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS
    )  # the inner run
    args = parser.parse_args(argv)
    if args.reference:
        reference(Path(args.reference[0]), Path(args.reference[1]))
        return 0
    inputs = dict(signals(), real=real_clip(args.mirror))
    with tempfile.TemporaryDirectory() as scratch:
        src, dst = Path(scratch) / "inputs.npz", Path(scratch) / "reference.npz"
        np.savez(src, **inputs)
        subprocess.run(
            [args.python, __file__, "--python", args.python, "--reference", str(src), str(dst)], check=True
        )
        computed = dict(np.load(dst))
    names = list(inputs)
    stored = {
        "names": np.array(names),
        "sha256": np.array([sha256(inputs[n]) for n in names]),
        "tuning": np.array([computed[f"{n}/tuning"] for n in names]),
        "chroma": np.stack([computed[f"{n}/chroma"] for n in names]),
        "mfcc": np.stack([computed[f"{n}/mfcc"] for n in names]),
        **{k: computed[k] for k in ("versions", "kaiser_fast_022_taps", "kaiser_fast_022_rolloff")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **stored)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from {json.loads(str(computed['versions']))}")
    compare(inputs, computed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
