"""GTZAN genre, fault-filtered split (``gtzan_ff``; docs/datasets.md).

Raw assets: ``GTZAN`` (``genres.tar.gz``: ``genres/<genre>/<genre>.000NN.wav``,
1000 files at 22,050 Hz) and the Kereliuk et al. (2015) fault-filtered lists
``GTZAN_TRAIN/VALID/TEST`` (one ``<genre>/<id>.wav`` path per line). The uid of
a file is the sha256 hex digest of its id (``blues.00000``); files in none of
the lists are dropped, which leaves 930 (443/197/290).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path, PurePath

from ..assets import Asset, get_asset, unpack
from ..errors import UserError
from .process import Source, asset_path, fetch

NAME = "gtzan_ff"
ARCHIVE = "GTZAN"
SPLIT_LISTS = {"train": "GTZAN_TRAIN", "valid": "GTZAN_VALID", "test": "GTZAN_TEST"}


def required_assets() -> list[Asset]:
    """The archive and the three split lists."""
    return [get_asset(tag) for tag in (ARCHIVE, *SPLIT_LISTS.values())]


def prepare(work: Path, *, mirror: str | None = None, jobs: int = 4) -> None:
    """Download what is missing and unpack the archive into ``work`` (once)."""
    paths = fetch(required_assets(), mirror=mirror, jobs=jobs)
    unpack(paths[ARCHIVE], work)


def uid_of(did: str) -> str:
    """The original's uid of a GTZAN id: sha256 hex of its UTF-8 bytes (64 characters)."""
    return hashlib.sha256(did.encode("utf-8")).hexdigest()


def derive(wav_paths: Iterable[str], split_lists: dict[str, Iterable[str]]) -> dict:
    """Metadata from the archive's WAV paths (``.../<genre>/<id>.wav``) and the split lists' lines.

    Returns uid -> ``{"y": genre, "split": ..., "extra": {"id", "uid"}}`` for
    the files named in a list. An id listed twice is an error.
    """
    did_to_split = {}
    for split, lines in split_lists.items():
        for line in lines:
            did = PurePath(line.strip()).stem
            if did in did_to_split:
                raise UserError(f"GTZAN split lists: {did} is listed in both {did_to_split[did]} and {split}")
            did_to_split[did] = split
    meta, seen = {}, set()
    for path in sorted(wav_paths):
        p = PurePath(path)
        genre, did = p.parts[-2], p.stem
        uid = uid_of(did)
        if uid in seen:
            raise UserError(f"GTZAN: two files with the id {did}")
        seen.add(uid)
        if did in did_to_split:
            meta[uid] = {"y": genre, "split": did_to_split[did], "extra": {"id": did, "uid": uid}}
    return meta


def derive_metadata(work: Path) -> dict:
    """:func:`derive` on the unpacked archive in ``work`` and the downloaded split lists."""
    wavs = [str(p.relative_to(work)) for p in work.rglob("*.wav")]
    lists = {split: asset_path(tag).read_text().split() for split, tag in SPLIT_LISTS.items()}
    return derive(wavs, lists)


def audio_source(uid: str, record: dict, work: Path) -> Source:
    """``genres/<genre>/<id>.wav``, whole."""
    return Source(work / "genres" / record["y"] / f"{record['extra']['id']}.wav")
