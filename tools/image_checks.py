#!/usr/bin/env python3
"""The file-level checks of ``tools/test_images.sh``, one subcommand each; exit 1 with a one-line reason.

* ``inputs DIR MP3...``: the test clips: four synthetic WAVs (16-48 kHz, mono and stereo, 16- and
  24-bit, 3.5-4 s: long enough for every representation) plus copies of the given mp3 files.
* ``corrupt SRC DIR``: ``DIR`` = the files of ``SRC`` plus ``broken.wav``, bytes that are no audio.
* ``checkpoints DIR``: random weights in the official formats, from the test suite's own writers:
  ``DIR/clmr/clmr_epoch=10000.ckpt`` (CLMR's Lightning checkpoint) and ``DIR/jukebox/`` (an 8-block
  Jukebox: ``vqvae.pth.tar`` and ``prior_level_2.pth.tar``, 32-d features).
* ``outputs OUT INPUT_DIR DIM [--uid UID] [--skip NAME ...]``: one ``<stem>.npy`` per file of
  ``INPUT_DIR`` (but the skipped ones), each float32 of shape ``(DIM,)``, all finite, owned by ``UID``.
* ``same A B``: the same ``.npy`` names in both folders and bit-identical arrays.
* ``snapshot DIR``: one line per ``.npy`` (name, inode, size, mtime in ns), to prove a rerun wrote nothing.
* ``results FILE DATASET REP...``: the ``results.json`` of ``6_evaluate.sh`` has one row per
  representation with a test score in [0, 1].

Needs the project's environment (numpy, soundfile; ``checkpoints`` also torch and pytest, for the
writers in ``tests/``). Run from anywhere: the repository root is put on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"image_checks: {message}", file=sys.stderr)
    raise SystemExit(1)


def cmd_inputs(args) -> None:
    import soundfile as sf

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    # (name, sample rate, seconds, subtype); "chord" is stereo
    clips = [
        ("chord_44k_stereo", 44100, 3.5, "PCM_16"),
        ("noise_16k", 16000, 4.0, "PCM_16"),
        ("sweep_48k_24bit", 48000, 3.5, "PCM_24"),
        ("tone_22k", 22050, 4.0, "PCM_16"),
    ]
    for name, sr, seconds, subtype in clips:
        t = np.arange(int(sr * seconds)) / sr
        if name.startswith("chord"):
            mono = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) / 3
            audio = np.stack([mono, np.roll(mono, 100)], axis=1)
        elif name.startswith("noise"):
            audio = rng.uniform(-1, 1, len(t))
        elif name.startswith("sweep"):
            audio = np.sin(2 * np.pi * (100 * t + 400 * t**2))
        else:
            audio = np.sin(2 * np.pi * 220 * t) * np.exp(-t)
        sf.write(folder / f"{name}.wav", (0.5 * audio).astype(np.float32), sr, subtype=subtype)
    for mp3 in args.mp3:
        shutil.copy(mp3, folder)
    print(f"{len(clips)} synthetic WAVs and {len(args.mp3)} mp3 in {folder}")


def cmd_corrupt(args) -> None:
    src, folder = Path(args.src), Path(args.dir)
    shutil.copytree(src, folder)
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    print(f"{folder}: the files of {src} plus broken.wav")


def cmd_checkpoints(args) -> None:
    import pytest

    sys.path.insert(0, str(REPO))
    from tests.test_clmr import random_encoder
    from tests.test_clmr import save_official as save_clmr
    from tests.test_jukebox import TINY, write_checkpoints

    folder = Path(args.dir)
    (folder / "clmr").mkdir(parents=True, exist_ok=True)
    patch = pytest.MonkeyPatch()
    try:
        save_clmr(folder / "clmr" / "clmr_epoch=10000.ckpt", random_encoder(seed=0), patch)
    finally:
        patch.undo()
    write_checkpoints(folder / "jukebox")
    print(f"random official-format checkpoints in {folder}: clmr (512-d), jukebox ({TINY['prior_width']}-d)")


def cmd_outputs(args) -> None:
    out, inputs = Path(args.out), Path(args.input_dir)
    stems = sorted(p.stem for p in inputs.iterdir() if p.is_file() and p.name not in args.skip)
    found = sorted(p.stem for p in out.glob("*.npy"))
    if found != stems:
        fail(f"{out}: outputs {found} != inputs {stems}")
    for stem in stems:
        path = out / f"{stem}.npy"
        x = np.load(path)
        if x.shape != (args.dim,) or x.dtype != np.float32:
            fail(f"{path}: shape {x.shape} dtype {x.dtype}, expected ({args.dim},) float32")
        if not np.isfinite(x).all():
            fail(f"{path}: {int((~np.isfinite(x)).sum())} non-finite values")
        if args.uid is not None and path.stat().st_uid != args.uid:
            fail(f"{path}: owned by uid {path.stat().st_uid}, expected {args.uid}")
    print(f"{len(stems)} outputs, ({args.dim},) float32, finite")


def cmd_same(args) -> None:
    a, b = Path(args.a), Path(args.b)
    names_a = sorted(p.name for p in a.glob("*.npy"))
    names_b = sorted(p.name for p in b.glob("*.npy"))
    if names_a != names_b:
        fail(f"{a} has {names_a}, {b} has {names_b}")
    if not names_a:
        fail(f"{a}: no outputs to compare")
    for name in names_a:
        x, y = np.load(a / name), np.load(b / name)
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            diff = float(np.max(np.abs(x.astype(np.float64) - y))) if x.shape == y.shape else float("nan")
            fail(f"{name}: {a} and {b} differ (max |diff| {diff:.3g}, shapes {x.shape} {y.shape})")
    print(f"{len(names_a)} outputs bit-identical")


def cmd_snapshot(args) -> None:
    for path in sorted(Path(args.dir).glob("*.npy")):
        st = path.stat()
        print(path.name, st.st_ino, st.st_size, st.st_mtime_ns)


def cmd_results(args) -> None:
    data = json.loads(Path(args.file).read_text())
    rows = data["rows"] if isinstance(data, dict) else data
    got = sorted((row["dataset"], row["representation"]) for row in rows)
    want = sorted((args.dataset, rep) for rep in args.reps)
    if got != want:
        fail(f"{args.file}: rows {got}, expected {want}")
    for row in rows:
        score = row["test"]["score"]
        if not 0.0 <= score <= 1.0:
            fail(f"{args.file}: {row['representation']} test score {score} outside [0, 1]")
    print(", ".join(f"{row['representation']} {row['test']['score']:.3f}" for row in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("dir")
    p.add_argument("mp3", nargs="*")
    p = sub.add_parser("corrupt")
    p.add_argument("src")
    p.add_argument("dir")
    p = sub.add_parser("checkpoints")
    p.add_argument("dir")
    p = sub.add_parser("outputs")
    p.add_argument("out")
    p.add_argument("input_dir")
    p.add_argument("dim", type=int)
    p.add_argument("--uid", type=int, default=None)
    p.add_argument("--skip", nargs="*", default=[])
    p = sub.add_parser("same")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("snapshot")
    p.add_argument("dir")
    p = sub.add_parser("results")
    p.add_argument("file")
    p.add_argument("dataset")
    p.add_argument("reps", nargs="+")
    args = parser.parse_args(argv)
    globals()[f"cmd_{args.command}"](args)


if __name__ == "__main__":
    main()
