"""GiantSteps key, 30 s clips (``giantsteps_clips``; docs/datasets.md).

Raw assets: the GitHub archives of giantsteps-mtg-key-dataset (the train/valid
pool: ``annotations/{beatport_metadata,annotations}.txt``, per-track
``annotations/{genre,key,giantsteps}/<id>.LOFI.*``) and giantsteps-key-dataset
(the test set, plus ``annotations/jams``), tracks enumerated from ``md5/*.md5``;
and 2,090 two-minute MP3s (44.1 kHz), one asset each.

Train-pool tracks are kept only with confidence ``C == 2`` and a single
``MANUAL KEY`` (Korzeniowski and Widmer 2018); sharps become flats. Artists are
hashed into train/valid (sha1 mod 116: 100 train, 16 valid), then twice every
artist of a track with a valid artist becomes valid. Each track is cut into
30 s clips at 0, 30, 60, ... s; a shorter last clip is dropped. Clip uid:
``<7-digit id>-<clip index>``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .. import cache
from ..assets import Asset, assets_for, registry, unpack
from ..audio import audio_info
from ..errors import NotFoundError, UserError
from .process import Source, fetch

NAME = "giantsteps_clips"
POOLS = {"train": "GIANTSTEPS_MTG_KEY_ANNOTATIONS", "test": "GIANTSTEPS_KEY_ANNOTATIONS"}
MP3_TAGS = {"train": "GIANTSTEPS_MTG_KEY_{}", "test": "GIANTSTEPS_KEY_{}"}
CLIP_SECONDS = 30.0
ARTIST_SPLITS = ["train"] * 100 + ["valid"] * 16  # the original's ratio, "roughly 80/20"
FLATS = {"C#": "Db", "D#": "Eb", "F#": "Gb", "G#": "Ab", "A#": "Bb"}
ANNOTATION_FILES = ["genre", "key", "jams", "giantsteps.genre", "giantsteps.key"]


def required_assets() -> list[Asset]:
    """Both annotation archives and every MP3."""
    return assets_for("GIANTSTEPS")


def prepare(work: Path, *, mirror: str | None = None, jobs: int = 4) -> None:
    """Download what is missing and unpack the two annotation archives into ``work/<pool>`` (once)."""
    paths = fetch(required_assets(), mirror=mirror, jobs=jobs)
    for pool, tag in POOLS.items():
        unpack(paths[tag], work / pool)


def uid_of(did: int) -> str:
    """``5061`` -> ``"0005061"``."""
    return str(did).zfill(7)


def mp3_path(did: int) -> Path:
    """The cached MP3 of track ``did`` (train pool or test set)."""
    assets = registry()
    for template in MP3_TAGS.values():
        if template.format(did) in assets:
            return cache.cache_dir() / assets[template.format(did)].path_rel
    raise UserError(f"GiantSteps track {did}: no MP3 asset in the manifests")


def _artists(row: dict) -> list[str]:
    return [a.strip() for a in row["ARTIST"].strip().split(",")]


def artist_splits(beatport_rows: Iterable[dict]) -> dict[str, str]:
    """artist -> train/valid for the train pool: sha1 of the lowercased name mod 116, then two hops."""
    rows = list(beatport_rows)
    split_of = {}
    for row in rows:
        for artist in _artists(row):
            digest = int(hashlib.sha1(artist.lower().encode("utf-8")).hexdigest(), 16)
            split_of[artist] = ARTIST_SPLITS[digest % len(ARTIST_SPLITS)]
    for _ in range(2):  # every collaborator of a valid artist is valid, two hops out
        for row in rows:
            artists = _artists(row)
            if any(split_of[a] == "valid" for a in artists):
                for artist in artists:
                    split_of[artist] = "valid"
    return split_of


def clip_offsets(duration: float) -> list[tuple[int, float]]:
    """``(clip index, offset)`` of the full 30 s clips of a ``duration``-second track."""
    return [
        (idx, float(offset))
        for idx, offset in enumerate(np.arange(0, duration, CLIP_SECONDS))
        if min(duration - offset, CLIP_SECONDS) >= CLIP_SECONDS
    ]


def derive(
    beatport_rows: Iterable[dict],
    tracks: Iterable[tuple[str, int, dict]],
    duration_of: Callable[[int], float],
) -> dict:
    """Clip metadata from the train pool's beatport rows, the tracks and their durations.

    ``tracks``: ``(pool, id, extra)`` with pool ``train``/``test`` and extra as
    :func:`read_pool` makes it. ``duration_of(id)``: the track's length in
    seconds (needed only for kept tracks). Returns clip uid -> ``{"split", "y",
    "clip": {audio_uid, audio_duration, clip_idx, clip_offset}, "extra"}``.
    """
    split_of = artist_splits(beatport_rows)
    meta = {}
    seen = set()
    for pool, did, extra in tracks:
        uid = uid_of(did)
        if uid in seen:
            raise UserError(f"GiantSteps: track {did} appears twice")
        seen.add(uid)
        if pool == "train":
            manual = extra["annotations"]["MANUAL KEY"]
            if int(extra["annotations"]["C"]) != 2 or "/" in manual:
                continue
            tonic, scale = manual.split()
            if not extra["key"].startswith(f"{tonic.lower()} {scale}"):
                raise UserError(
                    f"GiantSteps track {did}: MANUAL KEY {manual!r} but key file {extra['key']!r}"
                )
            tonic = FLATS.get(tonic, tonic)
            splits = {split_of[a] for a in _artists(extra["beatport_metadata"])}
            if len(splits) != 1:
                raise UserError(f"GiantSteps track {did}: its artists fall in both train and valid")
            split = splits.pop()
        else:
            tonic, scale = extra["key"].split()
            split = "test"
        record = {"split": split, "y": f"{tonic} {scale}", "extra": extra}
        duration = duration_of(did)
        for idx, offset in clip_offsets(duration):
            clip = copy.deepcopy(record)
            clip["clip"] = {
                "audio_uid": uid,
                "audio_duration": duration,
                "clip_idx": idx,
                "clip_offset": offset,
            }
            meta[f"{uid}-{idx}"] = clip
    return meta


def _pool_root(folder: Path) -> Path:
    if (folder / "md5").is_dir():
        return folder
    roots = [p for p in sorted(folder.iterdir()) if (p / "md5").is_dir()]
    if len(roots) != 1:
        raise NotFoundError(f"{folder}: expected one unpacked GiantSteps dataset with an md5/ folder")
    return roots[0]


def _read_tsv(path: Path) -> dict[int, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {int(row["ID"]): row for row in csv.DictReader(f, delimiter="\t")}


def read_pool(folder: Path, pool: str) -> tuple[list[dict], list[tuple[str, int, dict]]]:
    """Read one unpacked annotation archive: (beatport rows, ``(pool, id, extra)`` per md5 file).

    ``extra`` holds ``id``, the raw text of each per-track annotation file
    (``genre``, ``key``, ``giantsteps.genre``, ``giantsteps.key``), the parsed
    ``jams`` (test set) and the ``beatport_metadata``/``annotations`` rows
    (train pool).
    """
    root = _pool_root(folder)
    beatport, annotations = {}, {}
    if pool == "train":
        beatport = _read_tsv(root / "annotations" / "beatport_metadata.txt")
        annotations = _read_tsv(root / "annotations" / "annotations.txt")
    tracks = []
    for md5 in sorted((root / "md5").glob("*.md5")):
        did = int(md5.name.split(".")[0])
        extra: dict = {"id": did}
        if pool == "train":
            if did not in beatport or did not in annotations:
                raise UserError(f"{root}: track {did} has no row in beatport_metadata.txt or annotations.txt")
            extra["beatport_metadata"] = beatport[did]
            extra["annotations"] = annotations[did]
        for name in ANNOTATION_FILES:
            if name == "jams" and pool == "train":
                continue
            folder_name, _, ext = name.rpartition(".") if "." in name else (name, "", name)
            text = (root / "annotations" / folder_name / f"{did}.LOFI.{ext}").read_text(encoding="utf-8")
            extra[name] = json.loads(text) if name == "jams" else text
        tracks.append((pool, did, extra))
    return list(beatport.values()), tracks


def derive_metadata(work: Path) -> dict:
    """:func:`derive` on the unpacked archives, with durations read from the MP3 headers."""
    beatport, train = read_pool(work / "train", "train")
    _, test = read_pool(work / "test", "test")
    return derive(beatport, train + test, lambda did: audio_info(mp3_path(did))[2])


def audio_source(uid: str, record: dict, work: Path) -> Source:
    """The track's MP3, from ``clip_offset`` for 30 s."""
    return Source(mp3_path(record["extra"]["id"]), record["clip"]["clip_offset"], CLIP_SECONDS)
