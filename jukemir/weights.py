"""THE weights home: official files -> verified local copies -> converted once -> loaded.

Every representation with learned weights (musicnn, clmr, choi, jukebox,
clap-music, mert, ``hf:``) gets them the same way:

1. **Declare** the official files as an :class:`Official`: their assets
   (:class:`jukemir.assets.Asset`: URLs tried in order, the place in the
   cache, the place in a jukemir asset mirror, a hint such as ``--weights``),
   the folder under ``<cache>/models`` that holds them, and, for files without
   a published checksum, a structural ``check`` of a first download.
2. **Fetch and verify** (:meth:`Official.fetch`): a file with a checksum is
   verified against it (:func:`jukemir.assets.retrieve`: resume, retries,
   fallback URLs, mirrors, a per-file lock); a file without one is trusted on
   first use (:func:`jukemir.assets.retrieve_trusted`: its size and ``check``
   must pass, then its sha256 is recorded in ``<home>/sha256.json`` and every
   later retrieval must match it).
3. **Convert once** (:func:`convert_once`), where the source format is slow or
   wasteful to read (musicnn's TF checkpoints, Jukebox's 10 GB pickles): the
   artefact lives in :func:`converted_dir` ``<cache>/models/<model>/converted/
   <source id>/``, keyed by the identity of its source (:meth:`Official.sha256`,
   known without the file once it is checksummed or recorded, or
   :func:`fingerprint` of a user's file), and is written atomically by one
   process at a time (a :class:`jukemir.io.FileLock`). Later builds read the
   artefact and need neither the source nor the network; a different source
   gets a different artefact, never a stale one.
4. **Load**: the representation reads the files or the artefact and checks
   them against its model with :func:`check_keys` (every name, every shape).

``--weights PATH`` replaces steps 1-2 with the user's file or folder. The
provenance of the outputs records the weights' identity (a sha256, or a
conversion's source identity) as the option ``weights``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import cache
from .assets import Asset, retrieve, retrieve_trusted
from .errors import UserError
from .io import FileLock, read_json

RECORD = "sha256.json"  # the trust-on-first-use record of an Official's home


@dataclasses.dataclass(frozen=True)
class Official:
    """The official weight files of one model.

    Attributes:
        home: folder under ``<cache>/models`` holding the files and their trust
            record (``"musicnn"``, ``"jukebox/5b"``, ``"hf/<id>/<revision>"``);
            every asset's ``path_rel`` lies under ``models/<home>/``.
        assets: the files, in the order :meth:`fetch` returns them.
        check: ``check(path)`` raises ``ValueError`` when a first download of a
            file without a checksum is not what it should be (e.g. not a
            well-formed checkpoint); it is then moved aside as ``.bad``.
    """

    home: str
    assets: tuple[Asset, ...]
    check: Callable[[Path], None] | None = None

    def __post_init__(self):
        object.__setattr__(self, "assets", tuple(self.assets))
        for asset in self.assets:
            if not asset.path_rel.startswith(f"models/{self.home}/"):
                raise ValueError(f"asset {asset.tag}: {asset.path_rel} is not under models/{self.home}/")

    @property
    def folder(self) -> Path:
        """``<cache>/models/<home>``."""
        return cache.models_dir() / self.home

    def fetch(self, mirror: str | None = None) -> list[Path]:
        """Each asset downloaded (or found) and verified; their paths in the cache, in order.

        Raises :class:`jukemir.assets.DownloadError` (``ChecksumError`` when a
        file differs from its checksum or recorded sha256) or ``ValueError``
        when a first download fails its size or ``check``.
        """
        record = self.folder / RECORD
        return [
            retrieve(a, mirror=mirror)
            if a.checksum
            else retrieve_trusted(a, record, mirror=mirror, check=self.check)
            for a in self.assets
        ]

    def sha256(self, asset: Asset) -> str | None:
        """The sha256 ``asset`` must have, known without its file: its checksum, or the one recorded at
        its first download; ``None`` before that first download."""
        if asset.checksum is not None:
            return asset.checksum.lower() if asset.algorithm == "sha256" else None
        record = self.folder / RECORD
        entry = read_json(record).get(asset.path_rel) if record.is_file() else None
        return entry["sha256"] if entry else None


def fingerprint(path: str | os.PathLike) -> str:
    """Identifies a user's weight file without hashing it: sha1 of (real path, size, mtime), 16 hex digits."""
    st = Path(path).stat()
    return hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def converted_dir(model: str, source: str) -> Path:
    """``<cache>/models/<model>/converted/<source>``: the artefacts converted from the source ``source``
    (a sha256 or a :func:`fingerprint`; its first 16 hex digits name the folder)."""
    return cache.models_dir(model) / "converted" / source[:16]


def convert_once(path: Path, convert: Callable[[Path], None], what: str) -> Path:
    """Make ``path`` with ``convert(path)`` unless it exists; one process at a time; return ``path``.

    ``convert`` must write ``path`` atomically (:func:`jukemir.io.atomic_write`),
    so that an interrupted conversion leaves nothing under its name. Processes
    converting the same artefact take turns (a lock file ``<path>.lock``): the
    later ones find it made. ``what`` names the source in the message printed
    to stderr when a conversion starts.
    """
    path = Path(path)
    if path.is_file():
        return path
    with FileLock(
        path.with_name(path.name + ".lock"), waiting=f"{path}: another process is converting it; waiting"
    ):
        if not path.is_file():
            print(f"jukemir: converting {what} to {path} (once)", file=sys.stderr)
            convert(path)
    return path


def check_keys(found: dict[str, tuple], expected: dict[str, tuple], what: str) -> None:
    """Raise ``ValueError`` unless ``found`` (name -> shape) is exactly ``expected`` (names and shapes)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(found) & set(expected) if tuple(found[k]) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})")
        for k in wrong[:5]:
            parts.append(f"{k} has shape {tuple(found[k])}, the model expects {tuple(expected[k])}")
        raise UserError(f"{what}: weights do not match the model: " + "; ".join(parts))
