"""THE download helper: manifests of remote files, resumable checksummed downloads.

An :class:`Asset` is one remote file: a tag, where it goes under the cache
(``path_rel``), the URLs to try in order, and a checksum (md5/sha1/sha256,
inferred from the hex length as in the original; ``None`` skips verification).

:func:`retrieve` downloads an asset to ``<cache>/<path_rel>``:

* it streams into ``<dest>.part`` and resumes an interrupted download with an
  HTTP ``Range`` request (restarting if the server ignores it);
* it retries each URL with exponential backoff, then moves on to the next URL;
* the checksum is verified before the ``.part`` file is renamed to its real
  name, so a partial or wrong file is never mistaken for a complete one;
* ``mirror`` (or ``$JUKEMIR_MIRROR``) is a base URL or folder tried first:
  an asset is looked for there at its ``mirror_path`` (the layout of a jukemir
  asset mirror: ``weights/<model>/...``, ``reference/jukemir/metadata/...``,
  ``audio/...``), then at its ``path_rel`` (the cache's own layout, so a copy
  of another machine's cache is a mirror too);
* when every source fails, one line names the asset, each URL once with why it
  failed, and how to provide the file without network (its place in the cache,
  ``--mirror``, and the asset's own hint, e.g. a representation's ``--weights``).

The package's own manifests (``jukemir/assets/*.json``, TAG -> {path_rel, urls,
checksum}) form the registry read by :func:`get_asset` and :func:`assets_for`.

pooch (https://www.fatiando.org/pooch/latest/) was weighed for this job and not
taken: it restarts an interrupted download from zero (no ``Range``), has one
URL per file, no mirror folder, no cross-process lock and no trust-on-first-use
record (docs/design.md).
:func:`unpack` extracts a downloaded tar/zip archive once, refusing members that
would land outside the destination (tar members through ``tarfile``'s ``data``
extraction filter, https://docs.python.org/3/library/tarfile.html#tarfile-extraction-filter).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from . import cache
from .errors import JukemirError, UserError, one_line
from .io import DiskFullError, FileLock, no_space_error

MIRROR_ENV = "JUKEMIR_MIRROR"
MANIFEST_DIR = Path(__file__).with_name("assets")
CHUNK = 1 << 20
_ALGORITHMS = {32: "md5", 40: "sha1", 64: "sha256"}


class DownloadError(JukemirError, RuntimeError):
    """A download failed; the message names the asset, the URL(s) and the reason."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the manifest checksum."""


@dataclass(frozen=True)
class Asset:
    """One remote file. ``urls`` are tried in order; ``checksum`` is hex md5/sha1/sha256 or None.

    ``mirror_path``: where a jukemir asset mirror holds it (default: ``path_rel``);
    ``hint``: how else a user can provide it (shown when every download fails).
    """

    tag: str
    path_rel: str
    urls: tuple = field(default_factory=tuple)
    checksum: str | None = None
    size: int | None = None
    mirror_path: str | None = None
    hint: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "urls", tuple(self.urls))
        if self.checksum is not None and len(self.checksum) not in _ALGORITHMS:
            raise UserError(
                f"asset {self.tag}: checksum of length {len(self.checksum)} is not md5/sha1/sha256"
            )
        for rel in (self.path_rel, self.mirror_path):
            if rel is not None and (Path(rel).is_absolute() or ".." in Path(rel).parts):
                raise UserError(f"asset {self.tag}: {rel} must be a relative path without '..'")

    @property
    def algorithm(self) -> str | None:
        return _ALGORITHMS[len(self.checksum)] if self.checksum else None


def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(asset: Asset, path: str | os.PathLike) -> bool:
    """True when ``path`` matches the asset's checksum (always True without one)."""
    if asset.checksum is None:
        return Path(path).is_file()
    return file_checksum(path, asset.algorithm) == asset.checksum.lower()


def load_manifest(path: str | os.PathLike) -> dict[str, Asset]:
    """Read a manifest JSON: ``TAG -> {path_rel, url | urls, checksum[, size]}`` (the original's format)."""
    raw = json.loads(Path(path).read_text())
    assets = {}
    for tag, entry in raw.items():
        if tag != tag.upper():
            raise UserError(f"{path}: asset tag {tag!r} must be upper case")
        urls = entry.get("urls") or ([entry["url"]] if entry.get("url") else [])
        assets[tag] = Asset(
            tag,
            entry["path_rel"].strip(),
            tuple(urls),
            entry.get("checksum"),
            entry.get("size"),
            entry.get("mirror_path"),
            entry.get("hint"),
        )
    return assets


def registry(manifest_dir: str | os.PathLike | None = None) -> dict[str, Asset]:
    """Every asset of the manifests under ``manifest_dir`` (default: the package's), by tag.

    Files are read recursively in sorted order; a tag or ``path_rel`` that
    appears twice is an error.
    """
    return dict(_load_registry(Path(manifest_dir or MANIFEST_DIR).resolve()))


@functools.lru_cache(maxsize=8)
def _load_registry(folder: Path) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    owner: dict[str, str] = {}
    for path in sorted(folder.rglob("*.json")):
        for tag, asset in load_manifest(path).items():
            if tag in assets:
                raise UserError(f"{path}: asset tag {tag} is also defined in another manifest")
            if asset.path_rel in owner:
                other = owner[asset.path_rel]
                raise UserError(f"{path}: {tag} has the same path_rel as {other}: {asset.path_rel}")
            assets[tag] = asset
            owner[asset.path_rel] = tag
    return assets


def get_asset(tag: str) -> Asset:
    """The registry's asset ``tag`` (case-insensitive); ``ValueError`` if there is none."""
    try:
        return registry()[tag.strip().upper()]
    except KeyError:
        raise UserError(f"unknown asset {tag!r}: not in the manifests of {MANIFEST_DIR}") from None


def assets_for(prefix: str = "") -> list[Asset]:
    """The registry's assets whose tag starts with ``prefix`` (case-insensitive), sorted by tag."""
    prefix = prefix.strip().upper()
    found = [asset for tag, asset in sorted(registry().items()) if tag.startswith(prefix)]
    if not found:
        raise UserError(f"no asset tag starts with {prefix!r}")
    return found


def mirror_setting(mirror: str | None = None) -> str | None:
    """The mirror to use: ``mirror`` if given, else ``$JUKEMIR_MIRROR`` (empty: none)."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    return mirror or None


def _candidate_urls(asset: Asset, mirror: str | None) -> list[str]:
    mirror = mirror_setting(mirror)
    urls = []
    if mirror:
        if "://" not in mirror:
            mirror = Path(mirror).expanduser().resolve().as_uri()
        for rel in dict.fromkeys(r for r in (asset.mirror_path, asset.path_rel) if r):
            urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(rel))
    return urls + list(asset.urls)


def without_network_hint(asset: Asset, dest: Path) -> str:
    """How to provide ``asset`` without a download: its place in the cache, a mirror, the asset's own hint."""
    where = asset.mirror_path or asset.path_rel
    text = (
        f"without network, put the file at {dest}, "
        f"or pass --mirror DIR_OR_URL (or set {MIRROR_ENV}) holding it as {where}"
    )
    return text + (f", or {asset.hint}" if asset.hint else "")


def _definitive(exc: BaseException) -> bool:
    """Whether retrying a URL is pointless: a missing local file, an unknown host, no route to it."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (FileNotFoundError, IsADirectoryError, NotADirectoryError, socket.gaierror)):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _fetch(url: str, part: Path, timeout: float, progress) -> bool:
    """Stream ``url`` into ``part``, resuming from its current size when the server allows.

    Returns whether it resumed (appended to bytes of an earlier attempt).
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "jukemir"})
    if have and not url.startswith("file:"):
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", 200)
        if have and status != 206:
            have = 0  # the server ignored the range: start over
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        if progress is not None:
            progress.reset(total=total)
            progress.update(have)
        with open(part, "ab" if have else "wb") as out:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                if progress is not None:
                    progress.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"connection closed after {part.stat().st_size} of {total} bytes")
    return have > 0


def retrieve(
    asset: Asset,
    root: str | os.PathLike | None = None,
    *,
    mirror: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Make sure ``asset`` is at ``<root>/<path_rel>`` (root: the cache) and verified; return its path.

    An existing file that fails verification is set aside (renamed ``.bad``)
    and downloaded again. Processes retrieving the same asset take turns (a
    lock file ``<dest>.lock``): the later ones find it verified. A resumed
    download that fails verification (the ``.part`` came from another version
    of the file) is restarted from zero. Raises :class:`DownloadError` naming
    the asset, the URLs tried and why each failed.
    """
    root = Path(root) if root is not None else cache.cache_dir()
    dest = root / asset.path_rel
    if dest.is_file() and verify(asset, dest):
        return dest
    urls = _candidate_urls(asset, mirror)
    if not urls:
        raise DownloadError(
            f"asset {asset.tag}: no URL to download it from; {without_network_hint(asset, dest)}"
        )
    with FileLock(
        dest.with_name(dest.name + ".lock"), waiting=f"{dest}: another process is downloading it; waiting"
    ):
        if dest.is_file():
            if verify(asset, dest):
                return dest  # another process finished it while this one waited
            dest.replace(dest.with_name(dest.name + ".bad"))
        return _download(asset, dest, urls, retries, backoff, timeout, progress)


def _download(asset: Asset, dest: Path, urls: list[str], retries, backoff, timeout, progress) -> Path:
    part = dest.with_name(dest.name + ".part")
    failures: dict[str, list] = {}  # url -> [last reason, attempts]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=asset.tag, unit="B", unit_scale=True, leave=False, dynamic_ncols=True, disable=None)

    last_was_mismatch = [False]

    def failed(url: str, reason: str, mismatch: bool = False) -> None:
        entry = failures.setdefault(url, [reason, 0])
        entry[0] = one_line(reason)
        entry[1] += 1
        last_was_mismatch[0] = mismatch

    try:
        for url in urls:
            attempt = 0
            while attempt <= retries:
                try:
                    resumed = _fetch(url, part, timeout, bar)
                except urllib.error.HTTPError as exc:
                    failed(url, f"HTTP {exc.code} {exc.reason}")
                    if exc.code == 416:  # range past the end: the .part is bad
                        part.unlink(missing_ok=True)
                    if exc.code in (404, 410, 403, 401):
                        break  # no point retrying this URL
                except (urllib.error.URLError, OSError, DownloadError) as exc:
                    full = no_space_error(exc, part) if isinstance(exc, OSError) else exc
                    if isinstance(full, DiskFullError):
                        raise full from None
                    reason = getattr(exc, "reason", None) or exc
                    if isinstance(reason, socket.gaierror):
                        reason = f"host not found ({reason.strerror}; offline?)"
                    failed(url, str(reason))
                    if _definitive(exc):
                        break
                else:
                    if verify(asset, part):
                        os.replace(part, dest)
                        return dest
                    got = file_checksum(part, asset.algorithm)
                    part.unlink(missing_ok=True)
                    failed(
                        url, f"checksum mismatch ({asset.algorithm} {got}, expected {asset.checksum})", True
                    )
                    if resumed:
                        continue  # the kept bytes were bad: start this URL over from zero
                    break
                if attempt < retries:
                    time.sleep(backoff * (2**attempt))
                attempt += 1
    finally:
        if bar is not None:
            bar.close()
    tried = "; ".join(
        f"{url}: {reason}" + (f" ({n} tries)" if n > 1 else "") for url, (reason, n) in failures.items()
    )
    if last_was_mismatch[0]:
        raise ChecksumError(f"asset {asset.tag}: {tried}")
    raise DownloadError(f"asset {asset.tag}: download failed ({tried}); {without_network_hint(asset, dest)}")


def retrieve_trusted(
    asset: Asset,
    record_path: str | os.PathLike,
    *,
    mirror: str | None = None,
    check=None,
) -> Path:
    """:func:`retrieve` an asset that has no published checksum, trusting it on first use.

    The first download is accepted after its size (``asset.size``, when known)
    and ``check(path)`` (e.g. "is a well-formed checkpoint"; it raises
    ``ValueError`` otherwise) pass; its sha256 and size are then recorded in the
    JSON file ``record_path`` and every later retrieval must match them
    (:class:`ChecksumError` otherwise). A first download that fails a check is
    moved aside as ``.bad`` and the error re-raised.
    """
    import dataclasses

    from .io import read_json, write_json

    record_path = Path(record_path)
    record = read_json(record_path) if record_path.exists() else {}
    trusted = record.get(asset.path_rel)
    if trusted:
        asset = dataclasses.replace(asset, checksum=trusted["sha256"])
    path = retrieve(asset, mirror=mirror)
    if not trusted:
        size = path.stat().st_size
        try:
            if asset.size is not None and size != asset.size:
                raise UserError(f"{path}: {size} bytes, expected {asset.size}")
            if check is not None:
                check(path)
        except ValueError as exc:
            path.replace(path.with_name(path.name + ".bad"))
            raise UserError(f"{exc}; moved aside as .bad, run again to re-download") from None
        record[asset.path_rel] = {"sha256": file_checksum(path), "size": size}
        write_json(record_path, record)
    return path


def retrieve_many(
    assets: Sequence[Asset] | Iterable[Asset],
    root: str | os.PathLike | None = None,
    *,
    jobs: int = 4,
    mirror: str | None = None,
    **kwargs,
) -> tuple[list[Path], list[str]]:
    """Retrieve several assets with ``jobs`` threads; return (paths, error messages).

    One failed asset does not stop the others.
    """
    from tqdm import tqdm

    assets = list(assets)
    paths, errors = [], []

    def one(asset):
        try:
            return retrieve(asset, root, mirror=mirror, progress=False, **kwargs), None
        except DownloadError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for path, err in tqdm(
            pool.map(one, assets), total=len(assets), desc="download", unit="file", disable=None
        ):
            (paths.append(path) if path else errors.append(err))
    return paths, errors


class UnsafeArchiveError(UserError):
    """An archive member would be written outside the destination, or is not a plain file."""


def _check_member(archive: Path, name: str) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or (member.parts and ":" in member.parts[0]):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to unpack")
    if ".." in member.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component; refusing to unpack")
    return member


def archive_members(
    archive: str | os.PathLike, dest: str | os.PathLike
) -> Iterator[tuple[PurePosixPath, Callable[[], IO[bytes]]]]:
    """Yield ``(relative path, open)`` for each regular file of a tar (any compression) or zip archive.

    ``dest`` is the folder the members are meant for. Directories are skipped.
    A member with an absolute path or a ``..`` component, or that is a link,
    raises :class:`UnsafeArchiveError` naming it. Tar members also pass
    ``tarfile``'s ``data`` extraction filter (PEP 706: nothing that resolves
    outside ``dest``, no device or special file, no link out of it).
    """
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                member = _check_member(archive, info.filename)
                if info.is_dir():
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    name = info.filename
                    raise UnsafeArchiveError(f"{archive}: member {name!r} is a link; refusing to unpack")
                yield member, functools.partial(zf.open, info)
        return
    if not hasattr(tarfile, "data_filter"):
        raise UserError(
            f"{archive}: unpacking a tar archive safely needs tarfile's data filter (PEP 706): "
            "Python 3.10.12, 3.11.4, 3.12 or later"
        )
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise UserError(f"{archive}: not a tar or zip archive ({exc})") from None
    with tf:
        for info in tf:
            member = _check_member(archive, info.name)
            try:
                info = tarfile.data_filter(info, os.fspath(dest))
            except tarfile.FilterError as exc:
                raise UnsafeArchiveError(f"{archive}: {exc}; refusing to unpack") from None
            if info.isdir():
                continue
            if not info.isfile():  # a link the data filter lets through (inside dest): files only here
                raise UnsafeArchiveError(f"{archive}: member {info.name!r} is a link; refusing to unpack")
            yield member, functools.partial(tf.extractfile, info)


def unpack(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` (tar/zip) into ``dest`` once; return ``dest``.

    A marker ``dest/.unpacked-<archive name>`` recording the archive's size and
    mtime is written last, so a finished extraction is skipped next time and an
    interrupted one is redone; processes unpacking the same archive take turns
    (a lock file beside the marker). Unsafe members raise :class:`UnsafeArchiveError`
    (:func:`archive_members`).
    """
    archive, dest = Path(archive), Path(dest)
    st = archive.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = dest / f".unpacked-{archive.name}"

    def done() -> bool:
        return marker.exists() and json.loads(marker.read_text()) == stamp

    if done():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(
        marker.with_name(marker.name + ".lock"),
        waiting=f"{archive}: another process is unpacking it; waiting",
    ):
        if done():
            return dest
        for member, open_member in archive_members(archive, dest):
            target = dest.joinpath(*member.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        marker.write_text(json.dumps(stamp))
    return dest
