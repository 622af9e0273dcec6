"""Emomusic static arousal and valence (``emomusic``; docs/datasets.md).

Raw assets: ``clips_45sec.tar.gz`` (``clips_45seconds/<song id>.mp3``, 44.1 kHz)
and ``annotations.tar.gz`` (six comma-separated CSVs). The uid is the 4-digit
song id. MediaEval 2013's evaluation set is the test split; the development
set is split 80/20 into train/valid by a hash of the normalised artist name.
``y = [arousal, valence]``, standardised with the mean and population std of
the development set (before the train/valid split).
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from ..assets import Asset, get_asset, unpack
from ..errors import NotFoundError, UserError
from .process import Source, fetch

NAME = "emomusic"
CLIPS = "EMOMUSIC_CLIPS"
ANNOTATIONS = "EMOMUSIC_ANNOTATIONS"
TABLES = [
    "songs_info",
    "static_annotations",
    "valence_cont_average",
    "valence_cont_std",
    "arousal_cont_average",
    "arousal_cont_std",
]
CLIP_SECONDS = 45.0
VALID_OF_10 = ["train"] * 8 + ["valid"] * 2


def required_assets() -> list[Asset]:
    """The clips and the annotations archives (the PDF manual is not needed)."""
    return [get_asset(CLIPS), get_asset(ANNOTATIONS)]


def prepare(work: Path, *, mirror: str | None = None, jobs: int = 4) -> None:
    """Download what is missing and unpack both archives into ``work`` (once)."""
    paths = fetch(required_assets(), mirror=mirror, jobs=jobs)
    unpack(paths[ANNOTATIONS], work)
    unpack(paths[CLIPS], work)


def uid_of(song_id: str) -> str:
    """``"2"`` -> ``"0002"``."""
    return str(int(song_id)).zfill(4)


def parse_minsec(text: str) -> float:
    """``"m.ss"`` -> seconds; a one-digit fraction is tens of seconds (``"1.3"`` -> 90.0)."""
    minutes, _, seconds = text.partition(".")
    if len(seconds) == 1:
        seconds += "0"
    return 60.0 * float(minutes) + (float(seconds) if seconds else 0.0)


def artist_split(artist: str) -> str:
    """train or valid: sha1 of the lowercased artist, ASCII letters and single spaces only,
    mod 10 (>= 8: valid)."""
    kept = "".join(c for c in artist.lower() if ord(c) < 128 and (c.isalpha() or c.isspace()))
    kept = " ".join(kept.split())
    return VALID_OF_10[int(hashlib.sha1(kept.encode("utf-8")).hexdigest(), 16) % len(VALID_OF_10)]


def derive(tables: dict[str, list[dict]]) -> dict:
    """Metadata from the rows of the six CSVs (``tables[stem]`` as csv.DictReader gives them).

    Returns uid -> ``{"split", "clip": {audio_uid: [artist, title],
    audio_duration, clip_idx: 0, clip_offset}, "y": [arousal_z, valence_z],
    "extra": {stem: row}}``.
    """
    meta: dict[str, dict] = {}
    songs = set()
    for stem in TABLES:
        for raw in tables[stem]:
            row = {k: v.strip() for k, v in raw.items()}
            uid = uid_of(row["song_id"])
            if stem == "songs_info":
                song = (row["Artist"], row["Song title"])
                if uid in meta or song in songs:
                    raise UserError(f"songs_info.csv: song {row['song_id']} ({song}) appears twice")
                songs.add(song)
                start = parse_minsec(row["start of the segment (min.sec)"])
                end = parse_minsec(row["end of the segment (min.sec)"])
                if end - start != CLIP_SECONDS:
                    raise UserError(
                        f"songs_info.csv: song {row['song_id']} segment is {end - start} s, not 45"
                    )
                meta[uid] = {
                    "split": "test" if row["Mediaeval 2013 set"] == "evaluation" else "train",
                    "clip": {
                        "audio_uid": list(song),
                        "audio_duration": end,
                        "clip_idx": 0,
                        "clip_offset": start,
                    },
                    "y": None,
                    "extra": {},
                }
            elif uid not in meta:
                raise UserError(f"{stem}.csv: song {row['song_id']} is not in songs_info.csv")
            meta[uid]["extra"][stem] = row
            if stem == "static_annotations":
                meta[uid]["y"] = [float(row["mean_arousal"]), float(row["mean_valence"])]

    # One 1-D array per target, as the original: numpy's pairwise sums differ along axis 0 of a 2-D array.
    development = [np.array([m["y"][i] for m in meta.values() if m["split"] == "train"]) for i in range(2)]
    mean = [np.mean(x) for x in development]
    std = [np.std(x) for x in development]
    for record in meta.values():
        record["y"] = [float((record["y"][i] - mean[i]) / std[i]) for i in range(2)]
        if record["split"] == "train":
            record["split"] = artist_split(record["extra"]["songs_info"]["Artist"])
    return meta


def _find(work: Path, name: str) -> Path:
    direct = work / name
    if direct.exists():
        return direct
    found = sorted(work.rglob(name))
    if not found:
        raise NotFoundError(f"{work}: no {name} in the unpacked emomusic annotations")
    return found[0]


def derive_metadata(work: Path) -> dict:
    """:func:`derive` on the unpacked annotation CSVs in ``work``."""
    tables = {}
    for stem in TABLES:
        with open(_find(work, f"{stem}.csv"), newline="", encoding="utf-8") as f:
            tables[stem] = list(csv.DictReader(f))
    return derive(tables)


def audio_source(uid: str, record: dict, work: Path) -> Source:
    """``clips_45seconds/<song id>.mp3``, whole."""
    return Source(work / "clips_45seconds" / f"{int(uid)}.mp3")
