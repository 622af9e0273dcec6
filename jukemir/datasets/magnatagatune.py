"""MagnaTagATune top-50 tags (``magnatagatune``; docs/datasets.md).

Raw assets: ``mp3.zip.001..003`` (one zip cut in three; joined byte-wise, then
unpacked to ``<hex folder>/<name>.mp3``, 16 kHz), ``clip_info_final.csv`` and
``annotations_final.csv`` (tab-separated). The uid is the 5-digit clip id. The
split follows the first character of ``mp3_path``: ``0``-``b`` train, ``c``
valid, ``d``-``f`` test; clips without audio (and three corrupt MP3s) have
split null and no WAV. Labels are the clip's tags among the 50 most frequent,
in the CSV's column order; clips with no top-50 tag are kept.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..assets import Asset, get_asset, unpack
from ..errors import UserError
from ..io import atomic_write
from .process import Source, asset_path, fetch

NAME = "magnatagatune"
PARTS = ["MAGNATAGATUNE_MP3_001", "MAGNATAGATUNE_MP3_002", "MAGNATAGATUNE_MP3_003"]
CLIP_INFO = "MAGNATAGATUNE_CLIP_METADATA"
ANNOTATIONS = "MAGNATAGATUNE_ANNOTATIONS"
CORRUPT = {"35644", "55753", "57881"}
SPLIT_OF_FOLDER = {**{c: "train" for c in "0123456789ab"}, "c": "valid", **{c: "test" for c in "def"}}
NUM_TAGS = 50


def required_assets() -> list[Asset]:
    """The three zip parts, the clip metadata and the annotations."""
    return [get_asset(tag) for tag in (*PARTS, CLIP_INFO, ANNOTATIONS)]


def prepare(work: Path, *, mirror: str | None = None, jobs: int = 4) -> None:
    """Download what is missing, join the zip parts and unpack the MP3s into ``work`` (once)."""
    paths = fetch(required_assets(), mirror=mirror, jobs=jobs)
    joined = work / "mp3.zip"
    if (work / f".unpacked-{joined.name}").exists():
        return
    with atomic_write(joined) as out:
        for tag in PARTS:
            with open(paths[tag], "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    unpack(joined, work)
    joined.unlink()


def uid_of(clip_id: str) -> str:
    """``"2"`` -> ``"00002"``."""
    return str(int(clip_id)).zfill(5)


def derive(clip_rows: Iterable[dict], annotation_rows: Iterable[dict]) -> dict:
    """Metadata from the rows of ``clip_info_final.csv`` and ``annotations_final.csv`` (as csv.DictReader
    gives them).

    Returns uid -> ``{"split", "clip": {audio_uid, audio_duration, clip_idx,
    clip_offset}, "y": top-50 tags or None, "y_all": all tags or None, "extra":
    <the clip_info row>}``.
    """
    clips: dict[str, dict] = {}
    track_clips: dict[tuple, list] = defaultdict(list)
    for row in clip_rows:
        uid = uid_of(row["clip_id"])
        track = (row["url"].strip(), row["track_number"].strip())
        if not all(track):
            raise UserError(f"clip_info_final.csv: clip {row['clip_id']} has no url or track_number")
        if uid in clips:
            raise UserError(f"clip_info_final.csv: clip {row['clip_id']} appears twice")
        clips[uid] = dict(row)
        track_clips[track].append(uid)
    for uids in track_clips.values():
        uids.sort(key=lambda u: int(clips[u]["segmentStart"]))

    tags_of: dict[str, list] = {}
    counts: Counter = Counter()
    for row in annotation_rows:
        uid = uid_of(row["clip_id"])
        if uid not in clips or clips[uid]["mp3_path"] != row["mp3_path"]:
            raise UserError(
                f"annotations_final.csv: clip {row['clip_id']} does not match clip_info_final.csv"
            )
        tags = [k for k, v in row.items() if k not in ("clip_id", "mp3_path") and v == "1"]
        tags_of[uid] = tags
        counts.update(tags)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: ties keep first-seen order
    top = {tag for tag, _ in ranked[:NUM_TAGS]}
    if len(top) != NUM_TAGS:
        raise UserError(f"annotations_final.csv: only {len(top)} distinct tags, need {NUM_TAGS}")

    meta = {}
    for uid, row in clips.items():
        track = (row["url"].strip(), row["track_number"].strip())
        siblings = track_clips[track]
        mp3_path = "" if uid in CORRUPT else row["mp3_path"].strip()
        split = None
        if mp3_path:
            folder = mp3_path.split("/")[0]
            if folder not in SPLIT_OF_FOLDER:
                raise UserError(
                    f"clip_info_final.csv: clip {row['clip_id']}: "
                    f"mp3_path {mp3_path!r} is not in a 0-f folder"
                )
            split = SPLIT_OF_FOLDER[folder]
        tags = tags_of.get(uid)
        meta[uid] = {
            "split": split,
            "clip": {
                "audio_uid": list(track),
                "audio_duration": max(float(clips[u]["segmentEnd"]) for u in siblings),
                "clip_idx": siblings.index(uid),
                "clip_offset": float(row["segmentStart"]),
            },
            "y": None if tags is None else [t for t in tags if t in top],
            "y_all": tags,
            "extra": row,
        }
    return meta


def _read_tsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def derive_metadata(work: Path) -> dict:
    """:func:`derive` on the downloaded CSVs."""
    return derive(_read_tsv(asset_path(CLIP_INFO)), _read_tsv(asset_path(ANNOTATIONS)))


def audio_source(uid: str, record: dict, work: Path) -> Source | None:
    """``<mp3_path>``, whole; None for the clips the original leaves without audio (split null)."""
    if record["split"] is None:
        return None
    return Source(work / record["extra"]["mp3_path"])
