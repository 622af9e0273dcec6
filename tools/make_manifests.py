"""Regenerate ``jukemir/assets/*.json`` from the original's manifests.

Usage::

    python tools/make_manifests.py REFERENCE_DIR

REFERENCE_DIR holds the original jukemir's ``assets/*.json`` (TAG -> {path_rel,
url, checksum}) and ``metadata/*.json.gz``. Each entry is rewritten in our
format, TAG -> {path_rel, urls, checksum}, with the URLs in order of
preference: dead hosts are preceded by their known mirrors (docs/datasets.md) and
kept last, in case they come back. The checksums are the original's, so a
mirror is accepted only if it serves the very same bytes. A ``metadata.json``
is added for the paper's processed metadata, pinned to the commit the
reference copies come from (their sha256 is computed here).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "jukemir" / "assets"

JUKEMIR_COMMIT = "241555645682d18fb909775c54014edfc3a03163"
METADATA = ["gtzan_ff", "magnatagatune", "giantsteps_clips", "emomusic"]

GTZAN_ORIGINAL = "http://opihi.cs.uvic.ca/sound/genres.tar.gz"
GTZAN_MIRRORS = [
    "https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz",
    # The capture linked from the original README; "id_" asks for the raw bytes.
    "https://web.archive.org/web/20211207012050id_/" + GTZAN_ORIGINAL,
]
MTT_ORIGINAL = "http://mi.soi.city.ac.uk/datasets/magnatagatune/"
MTT_MIRROR = "https://mirg.city.ac.uk/datasets/magnatagatune/"
EMOMUSIC_ORIGINAL = "http://cvml.unige.ch/databases/emoMusic/"
GIANTSTEPS_BEATPORT = "http://geo-samples.beatport.com/lofi/"


def _github_raw_mirror(url: str) -> list[str]:
    """A jsDelivr copy of a raw.githubusercontent.com file pinned to a commit."""
    prefix = "https://raw.githubusercontent.com/"
    if not url.startswith(prefix):
        return []
    owner, repo, commit, path = url[len(prefix) :].split("/", 3)
    return [f"https://cdn.jsdelivr.net/gh/{owner}/{repo}@{commit}/{path}"]


def urls_for(url: str) -> list[str]:
    """The original URL with its mirrors, best first."""
    if url == GTZAN_ORIGINAL:
        return GTZAN_MIRRORS + [url]
    if url.startswith(MTT_ORIGINAL):
        return [MTT_MIRROR + url[len(MTT_ORIGINAL) :], url]
    if url.startswith(EMOMUSIC_ORIGINAL):
        # No official mirror; the Web Archive serves its nearest capture, if any.
        return [url, "https://web.archive.org/web/2021id_/" + url]
    if "cp.jku.at/datasets/giantsteps/" in url:
        # The dataset READMEs name Beatport's preview server as the source.
        return [url, GIANTSTEPS_BEATPORT + url.rsplit("/", 1)[1]]
    return [url] + _github_raw_mirror(url)


def convert(entries: dict) -> dict:
    return {
        tag: {"path_rel": e["path_rel"], "urls": urls_for(e["url"]), "checksum": e["checksum"]}
        for tag, e in entries.items()
    }


def metadata_manifest(metadata_dir: Path) -> dict:
    out = {}
    for name in METADATA:
        path = metadata_dir / f"{name}.json.gz"
        rel = f"metadata/{name}.json.gz"
        out[f"METADATA_{name.upper()}"] = {
            "path_rel": f"datasets/{rel}",
            "urls": [
                f"https://raw.githubusercontent.com/p-lambda/jukemir/{JUKEMIR_COMMIT}/{rel}",
                f"https://cdn.jsdelivr.net/gh/p-lambda/jukemir@{JUKEMIR_COMMIT}/{rel}",
            ],
            "checksum": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    return out


def main(reference_dir: str) -> None:
    ref = Path(reference_dir)
    for name in ["gtzan", "magnatagatune", "giantsteps", "emomusic", "precomputed"]:
        entries = json.loads((ref / "assets" / f"{name}.json").read_text())
        _write(name, convert(entries))
    _write("metadata", metadata_manifest(ref / "metadata"))


def _write(name: str, manifest: dict) -> None:
    path = OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{path}: {len(manifest)} assets")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
