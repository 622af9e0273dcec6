#!/usr/bin/env python3
"""Step 3: the extraction commands of every dataset x representation, 256 files per batch.

Input ``<cache>/processed/<dataset>/wav``, output ``<cache>/representations/<dataset>/<representation>``,
with ``<cache>`` = ``$JUKEMIR_CACHE_DIR`` (default ``~/.jukemir/cache``).

* default: print one ``docker run`` of ``jukemir/representations_<name>`` per batch, as the
  original's script (the paper's four datasets and six representations: 137 batches each, 822
  commands), each line runnable on its own, so they can be spread over machines;
* ``--run``: run those commands here, one after another;
* ``--local``: run ``jukemir extract`` natively instead, one command per dataset x representation
  covering all its batches (the model is loaded once; the batches, and so choi's batch-dependent
  features, are the same); ``--dry-run`` prints them.

A dataset's size is the number of items with a split in its ``meta.json``, else the paper's.
Everything after ``--`` is passed on to ``jukemir extract`` (e.g. ``-- --device cuda:1``).
Needs only the standard library, so that the Docker route needs no install on the host.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

DATASETS = ("gtzan_ff", "giantsteps_clips", "magnatagatune", "emomusic")
REPRESENTATIONS = ("chroma", "mfcc", "choi", "musicnn", "clmr", "jukebox")
# Items with audio and a split, per dataset (docs/datasets.md), for when meta.json is not there yet.
PAPER_SIZES = {"gtzan_ff": 930, "giantsteps_clips": 7035, "magnatagatune": 25860, "emomusic": 744}
GPU = {"musicnn", "clmr", "jukebox"}
# Options that make a representation compute as the paper did where the default differs.
PAPER_OPTIONS = {"jukebox": ["--precision", "fp32"]}
BATCH_SIZE = 256


def cache_dir() -> Path:
    """The cache root, as ``jukemir/cache.py`` resolves it."""
    root = os.environ.get("JUKEMIR_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".jukemir" / "cache").resolve()


def dataset_size(cache: Path, dataset: str) -> int:
    """Number of items of ``dataset`` that have a split (those the process stage writes as WAVs)."""
    meta = cache / "processed" / dataset / "meta.json"
    if meta.is_file():
        with open(meta) as handle:
            records = json.load(handle)
        return sum(1 for record in records.values() if record.get("split") is not None)
    if dataset in PAPER_SIZES:
        return PAPER_SIZES[dataset]
    raise SystemExit(
        f"3_extract.py: {meta}: no meta.json for dataset {dataset!r}; process or import it first"
    )


def docker_commands(
    cache: Path, dataset: str, representation: str, n_batches: int, args
) -> list[tuple[list, list]]:
    """``(folders to create, docker run argv)`` for each batch of one dataset x representation."""
    uid, gid = os.getuid(), os.getgid()
    wav = cache / "processed" / dataset / "wav"
    out = cache / "representations" / dataset / representation
    folders = [out]
    base = ["docker", "run", "--rm", "--user", f"{uid}:{gid}"]
    if representation in GPU and args.gpus:
        base += ["--gpus", "all"]
    base += ["-v", f"{wav}:/input:ro", "-v", f"{out}:/output"]
    if representation == "jukebox" and not args.baked_weights:
        models = cache / "models" / "jukebox"
        folders.append(models)
        base += ["-v", f"{models}:/jukemir/cache/models/jukebox"]
    if os.environ.get("JUKEMIR_MIRROR"):
        base += ["-e", "JUKEMIR_MIRROR"]
    base.append(f"{args.namespace}/representations_{representation}:{args.tag}")
    options = PAPER_OPTIONS.get(representation, []) + args.extra
    return [
        (folders, base + ["--batch_size", str(args.batch_size), "--batch_idx", str(i)] + options)
        for i in range(n_batches)
    ]


def local_command(cache: Path, dataset: str, representation: str, args) -> tuple[list, list]:
    """``(folders to create, jukemir extract argv)`` covering every batch of one dataset x representation."""
    wav = cache / "processed" / dataset / "wav"
    out = cache / "representations" / dataset / representation
    options = PAPER_OPTIONS.get(representation, []) + args.extra
    argv = ["jukemir", "extract", representation, str(wav), str(out), "--batch_size", str(args.batch_size)]
    return [out], argv + options


def parse_args(argv: list[str]) -> argparse.Namespace:
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Everything after -- goes to `jukemir extract`.",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="DATASET")
    parser.add_argument(
        "--representations",
        nargs="+",
        default=list(REPRESENTATIONS),
        choices=REPRESENTATIONS,
        metavar="REPRESENTATION",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="files per batch (the paper: 256)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--run", action="store_true", help="run the docker commands here instead of printing them"
    )
    mode.add_argument("--local", action="store_true", help="run `jukemir extract` natively instead of Docker")
    parser.add_argument(
        "--dry-run", action="store_true", help="with --local: print the commands, run nothing"
    )
    parser.add_argument(
        "--no-gpus", dest="gpus", action="store_false", help="no --gpus all for musicnn, clmr, jukebox"
    )
    parser.add_argument(
        "--baked-weights",
        action="store_true",
        help="the jukebox image has its weights built in: do not mount <cache>/models/jukebox",
    )
    parser.add_argument(
        "--namespace", default=os.environ.get("JUKEMIR_NAMESPACE", "jukemir"), help="image namespace"
    )
    parser.add_argument("--tag", default=os.environ.get("JUKEMIR_TAG", "latest"), help="image tag")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.dry_run and not args.local:
        parser.error("--dry-run goes with --local (without --local the commands are printed anyway)")
    args.extra = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cache = cache_dir()
    commands = []
    for dataset in args.datasets:
        if args.local:
            commands += [local_command(cache, dataset, rep, args) for rep in args.representations]
            continue
        n_batches = math.ceil(dataset_size(cache, dataset) / args.batch_size)
        for rep in args.representations:
            commands += docker_commands(cache, dataset, rep, n_batches, args)

    if not (args.run or args.local) or args.dry_run:
        for folders, command in commands:
            print(shlex.join(["mkdir", "-p", *map(str, folders)]), "&&", shlex.join(command))
        return 0

    if args.local and shutil.which("jukemir") is None:
        print("3_extract.py: the `jukemir` command is not on PATH (pip install jukemir)", file=sys.stderr)
        return 2
    failed = []
    for i, (folders, command) in enumerate(commands, 1):
        for folder in folders:
            Path(folder).mkdir(parents=True, exist_ok=True)
        print(f"[{i}/{len(commands)}] {shlex.join(command)}", file=sys.stderr, flush=True)
        if subprocess.run(command).returncode != 0:
            failed.append(shlex.join(command))
    for line in failed:
        print(f"3_extract.py: failed: {line}", file=sys.stderr)
    print(
        f"3_extract.py: {len(commands) - len(failed)} of {len(commands)} commands succeeded", file=sys.stderr
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
