"""The paper's precomputed features (docs/datasets.md): 24 tarballs, one per dataset and representation.

:func:`download_precomputed` fetches and verifies the tarballs (assets
``PRECOMPUTED-<DATASET>-<REPRESENTATION>``) and unpacks their ``.npy`` files into
``representations/<dataset>/<representation>/<uid>.npy``, where the probe and
the folder runner expect features (the runner keeps such outputs as they are).
Members with absolute paths, ``..`` components, links or devices are refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..assets import Asset, archive_members, assets_for
from ..cache import Layout
from ..errors import UserError
from ..io import atomic_write, read_json, write_json
from .process import MODULES, canonical_name, fetch

REPRESENTATIONS = ["chroma", "mfcc", "choi", "musicnn", "clmr", "jukebox"]
MARKER = Path(".jukemir") / "precomputed.json"


def _parts(asset: Asset) -> tuple[str, str]:
    _, dataset, representation = asset.tag.split("-")
    return dataset.lower(), representation.lower()


def precomputed_assets(*selectors: str) -> list[Asset]:
    """The tarballs selected by up to two names: a dataset, a representation, or both (none: all 24)."""
    datasets, representations = set(), set()
    for name in selectors:
        key = name.strip().lower()
        if key in REPRESENTATIONS:
            representations.add(key)
        else:
            try:
                datasets.add(canonical_name(key))
            except ValueError:
                known = ", ".join([*MODULES, *REPRESENTATIONS])
                raise UserError(
                    f"precomputed: {name!r} is neither a dataset nor a representation ({known})"
                ) from None
    return [
        asset
        for asset in assets_for("PRECOMPUTED-")
        if (not datasets or _parts(asset)[0] in datasets)
        and (not representations or _parts(asset)[1] in representations)
    ]


def install_precomputed(asset: Asset, tarball: str | Path) -> tuple[Path, int]:
    """Unpack the ``.npy`` members of a verified tarball into ``representations/<dataset>/<representation>/``.

    Files are flattened to their base names and written atomically. A marker
    records the tarball's checksum, so installing it again is a no-op. Returns
    ``(folder, number of .npy files)``.
    """
    target = Layout().representations(*_parts(asset))
    marker = target / MARKER
    if marker.exists():
        done = read_json(marker)
        if done.get("checksum") == asset.checksum:
            return target, done["files"]
    names: dict[str, str] = {}
    for member, open_member in archive_members(tarball, target):
        if member.suffix != ".npy":
            continue
        if member.name in names:
            raise UserError(
                f"{tarball}: {member} and {names[member.name]} would both become {target / member.name}"
            )
        names[member.name] = str(member)
        with open_member() as src, atomic_write(target / member.name) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    if not names:
        raise UserError(f"{tarball}: no .npy files in the archive")
    write_json(marker, {"tag": asset.tag, "checksum": asset.checksum, "files": len(names)})
    return target, len(names)


def download_precomputed(
    *selectors: str, jobs: int = 2, mirror: str | None = None
) -> list[tuple[str, Path, int]]:
    """Fetch, verify and unpack the selected tarballs; return ``(tag, folder, n_files)`` for each."""
    assets = precomputed_assets(*selectors)
    paths = fetch(assets, mirror=mirror, jobs=jobs)
    return [(asset.tag, *install_precomputed(asset, paths[asset.tag])) for asset in assets]
