"""Per-clip CPU extraction time of the pretrained-network representations.

For each representation in :data:`SETUPS` (name -> a function building it on
the CPU in a scratch folder), writes N synthetic 30 s clips as 22,050 Hz WAVs
(GTZAN-like, so choi and musicnn pay their resampling) and prints

* ``load``: decoding and resampling one file with the representation's ``load``;
* ``model``: the forward pass on decoded clips, batched as the folder runner
  batches them (choi with batch statistics: all N clips as one batch);
* ``total``: the sum, per clip.

Weights: the real choi files through the asset resolver (from ``$JUKEMIR_MIRROR``
when set, else the official download); random weights for clmr, saved in the official
checkpoint format, and for musicnn's MSD_musicnn_big unless its official
weights are already converted in the cache (the cost does not depend on the
values).

    python benchmarks/representations_cpu.py                 # all, 8 clips
    python benchmarks/representations_cpu.py clmr --clips 4 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jukemir.representations.base import Representation


def setup_choi(workdir: Path) -> Representation:
    from jukemir.representations.choi import Choi

    return Choi(device="cpu")  # the official weights: downloaded (or from $JUKEMIR_MIRROR) once, checksummed


def setup_clmr(workdir: Path) -> Representation:
    from jukemir.representations.clmr import CLMR, SampleCNN

    state = {f"model.encoder.{k}": v for k, v in SampleCNN().state_dict().items()}
    path = workdir / "clmr_epoch=10000.ckpt"
    torch.save({"pytorch-lightning_version": "1.2.3", "state_dict": state}, path)
    return CLMR(device="cpu", weights=path)


def setup_musicnn(workdir: Path) -> Representation:
    """The paper's MSD_musicnn_big: the official weights when converted in the cache, else random ones."""
    from jukemir import cache
    from jukemir.representations.musicnn import Musicnn, tf_variables

    converted = sorted(cache.models_dir("musicnn", create=False).glob("converted/*/MSD_musicnn_big.npz"))
    if converted:
        return Musicnn(device="cpu", weights=converted[0])
    rng = np.random.default_rng(0)
    state = {
        name: (np.ones(shape) if name.endswith("variance") else 0.05 * rng.standard_normal(shape)).astype(
            np.float32
        )
        for name, shape in tf_variables("MSD_musicnn_big").items()
    }
    path = workdir / "MSD_musicnn_big_random.npz"
    np.savez(path, **state)
    return Musicnn(device="cpu", weights=path)


SETUPS: dict[str, Callable[[Path], Representation]] = {
    "choi": setup_choi,
    "clmr": setup_clmr,
    "musicnn": setup_musicnn,
}


def measure(name: str, n_clips: int, seconds: float, workdir: Path) -> dict:
    """Seconds per clip for ``load`` and ``model`` (one warm-up batch first)."""
    rep = SETUPS[name](workdir)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_clips):
        path = workdir / f"{name}_{i}.wav"
        sf.write(str(path), (0.1 * rng.standard_normal(int(seconds * 22050))).astype(np.float32), 22050)
        paths.append(path)
    start = time.perf_counter()
    audios = [rep.load(p) for p in paths]
    load_s = (time.perf_counter() - start) / n_clips
    step = n_clips if rep.batch_dependent else max(1, rep.preferred_batch)
    rep.batch(audios[:step])  # warm-up
    start = time.perf_counter()
    for i in range(0, n_clips, step):
        rep.batch(audios[i : i + step])
    model_s = (time.perf_counter() - start) / n_clips
    return {"load": load_s, "model": model_s, "total": load_s + model_s}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", default=list(SETUPS), help=f"some of {', '.join(SETUPS)}")
    parser.add_argument("--clips", type=int, default=8, help="clips per representation")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SETUPS]
    if unknown:
        parser.error(f"unknown representation(s) {', '.join(unknown)}; expected some of {', '.join(SETUPS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"CPU, {torch.get_num_threads()} torch threads, {args.clips} clips of {args.seconds:g} s at 22,050 Hz"
    )
    print(f"{'representation':<16}{'load s/clip':>12}{'model s/clip':>14}{'total s/clip':>14}")
    for name in args.names:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(name, args.clips, args.seconds, Path(tmp))
        print(f"{name:<16}{r['load']:>12.3f}{r['model']:>14.3f}{r['total']:>14.3f}")


if __name__ == "__main__":
    main()
