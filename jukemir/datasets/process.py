"""Turn downloaded assets into ``processed/<dataset>/{wav/<uid>.wav, meta.json}``.

What the original's ``cache_dataset`` did with ffmpeg (docs/datasets.md), done with
THE audio loader:

* every item with audio is decoded with :func:`jukemir.audio.load_audio` at its
  native rate, mixed down to mono, cut to its clip (``offset``/``duration`` in
  seconds; only GiantSteps has clips inside a file) and written as a 16-bit PCM
  WAV (``round(x * 32768)``, clipped, as ffmpeg converts float to s16);
* each WAV is written to a temporary name and renamed, by a pool of worker
  processes that die with their parent; just before the rename its record,
  ``.jukemir/sources/<uid>.json``, is committed: the source file's name, size
  and mtime and the clip it was made from, and the WAV's size, mtime and
  sha256. A WAV is kept (an interrupted run resumes) only while its record
  vouches for both; one without a record, or whose source changed, is
  converted again. One process writes a dataset at a time (a lock file), so
  the temporaries it finds are a killed one's;
* ``meta.json`` holds every item, those without audio included (split null),
  with ``clip["clip_duration"] = n_samples / sample_rate`` of the WAV written.
  It exists only while it describes exactly the WAVs there: removed before
  any WAV is rewritten, written last by a run in which every file converted.

The metadata comes either from the paper's own files (``canonical``, the
default and the authority: the exact uids, splits, labels and clips) or is
derived from the raw annotations as the original did (``derived``);
:func:`verify_metadata` checks that the two agree.

Each benchmark is a module (:mod:`.gtzan`, :mod:`.magnatagatune`,
:mod:`.giantsteps`, :mod:`.emomusic`) with ``NAME``, ``required_assets()``,
``prepare(work, mirror, jobs)`` (download and unpack into a work folder that
persists between runs), ``derive_metadata(work)`` and
``audio_source(uid, record, work)``.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import importlib
import io
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from .. import cache
from ..assets import Asset, DownloadError, file_checksum, get_asset, retrieve_many
from ..audio import AudioError, audio_info, load_audio
from ..cache import Layout
from ..errors import UserError
from ..io import DiskFullError, FileLock, atomic_write, read_json, remove_stale_temporaries, write_json
from ..workers import imap_in_pool
from . import SPEC_FILE, is_file_name

MODULES = {
    "gtzan_ff": "gtzan",
    "magnatagatune": "magnatagatune",
    "giantsteps_clips": "giantsteps",
    "emomusic": "emomusic",
}
ALIASES = {"gtzan": "gtzan_ff", "giantsteps": "giantsteps_clips", "mtt": "magnatagatune"}
METADATA_CHOICES = ("canonical", "derived")
# Derived durations come from another MP3 decoder than the original's ffprobe.
AUDIO_DURATION_TOLERANCE_S = 0.1
STATE_DIR = ".jukemir"


@dataclass(frozen=True)
class Source:
    """Where an item's audio is: a file, and the clip inside it in seconds (None: the whole file)."""

    path: Path
    offset: float | None = None
    duration: float | None = None


@dataclass
class ProcessReport:
    """What one ``process`` run did. ``failed`` holds ``(uid, "file: reason")`` pairs."""

    dataset: str
    out_dir: str
    written: int = 0
    skipped: int = 0
    no_audio: int = 0
    stale: int = 0  # WAVs rewritten because their source changed
    failed: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        state = "meta.json written" if self.ok else "meta.json NOT written; run again to retry"
        return (
            f"process {self.dataset}: {self.written} WAVs written ({self.stale} of changed sources), "
            f"{self.skipped} already there, "
            f"{self.no_audio} items without audio, {len(self.failed)} failed in {self.seconds:.1f} s "
            f"-> {self.out_dir} ({state})"
        )


def canonical_name(name: str) -> str:
    """The benchmark's processed name (``gtzan`` -> ``gtzan_ff``); ``ValueError`` if unknown."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in MODULES:
        known = ", ".join([*MODULES, *ALIASES])
        raise UserError(f"unknown dataset {name!r}: expected one of {known}")
    return key


def dataset_module(name: str) -> ModuleType:
    """The module that knows the raw layout of benchmark ``name`` (aliases accepted)."""
    return importlib.import_module(f"{__package__}.{MODULES[canonical_name(name)]}")


def work_dir(name: str) -> Path:
    """Where a benchmark's archives are unpacked: ``<cache>/datasets/<module>/unpacked`` (kept between
    runs)."""
    return Layout().datasets(MODULES[canonical_name(name)]) / "unpacked"


def asset_path(tag: str) -> Path:
    """Where the registry's asset ``tag`` lives in the cache (it may not be downloaded yet)."""
    return cache.cache_dir() / get_asset(tag).path_rel


def fetch(assets: Sequence[Asset], *, mirror: str | None = None, jobs: int = 4) -> dict[str, Path]:
    """Download (or verify) ``assets``; return tag -> path. Raise DownloadError listing every failure."""
    _, errors = retrieve_many(assets, jobs=jobs, mirror=mirror)
    if errors:
        for line in errors[:10]:  # one line per asset: the URLs tried, why, and how to provide it
            print(f"jukemir: {line}", file=sys.stderr)
        more = (
            f" (the first 10 are listed above, {len(errors) - 10} more)"
            if len(errors) > 10
            else " (listed above)"
        )
        raise DownloadError(f"{len(errors)} of {len(assets)} files could not be downloaded{more}")
    return {a.tag: cache.cache_dir() / a.path_rel for a in assets}


def metadata_asset(name: str) -> Asset:
    """The registry's asset of the paper's processed metadata of ``name``."""
    return get_asset(f"METADATA_{canonical_name(name).upper()}")


def canonical_metadata(name: str, *, mirror: str | None = None) -> dict:
    """The paper's ``meta.json`` of ``name`` (uid -> record), downloaded and checksum-verified."""
    path = fetch([metadata_asset(name)], mirror=mirror, jobs=1)[metadata_asset(name).tag]
    return read_json(path)


def install_metadata(names: Iterable[str] = MODULES, *, mirror: str | None = None) -> list[Path]:
    """Fetch the paper's metadata and write it as ``processed/<dataset>/meta.json`` where there is none yet.

    This is what the probes need when the features come precomputed (no WAVs);
    an existing ``meta.json`` (e.g. from ``process``) is left alone. Returns the
    files written.
    """
    written = []
    for name in names:
        path = Layout().meta(canonical_name(name))
        if not path.exists():
            write_json(path, canonical_metadata(name, mirror=mirror))
            written.append(path)
    return written


def download_dataset(name: str, *, jobs: int = 4, mirror: str | None = None) -> dict[str, Path]:
    """Download and verify every raw asset of benchmark ``name`` plus its canonical metadata."""
    module = dataset_module(name)
    return fetch([*module.required_assets(), metadata_asset(name)], mirror=mirror, jobs=jobs)


# ---------------------------------------------------------------- WAV conversion
def wav_frames(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(frames, sample_rate)`` of an existing mono 16-bit PCM WAV, or None if it is missing or not one."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - missing or unreadable: not a valid output
        return None
    if info.format != "WAV" or info.subtype != "PCM_16" or info.channels != 1 or info.frames <= 0:
        return None
    return info.frames, info.samplerate


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 as ffmpeg converts them: ``clip(round(x * 32768))``."""
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(
    src: str | os.PathLike,
    dest: str | os.PathLike,
    offset: float | None = None,
    duration: float | None = None,
    *,
    record: str | os.PathLike | None = None,
    source: dict | None = None,
) -> tuple[int, int]:
    """Decode ``src`` (mono mix, native rate), keep ``[offset, offset + duration)`` seconds, write a 16-bit
    WAV.

    The WAV appears atomically under ``dest``. With ``record``, its provenance
    (``source``: what it was made from, and the WAV's own size, mtime and
    sha256) is written there first, just before the WAV is renamed into place,
    so a WAV never exists without the record that vouches for it (a record
    without its WAV, from a kill in between, matches no WAV and reads as stale).
    Returns ``(n_samples, sample_rate)``. Raises AudioError (one line, naming
    ``src``) when it cannot be decoded, DiskFullError when space runs out.
    """
    import soundfile as sf

    sample_rate = audio_info(src)[0]
    audio = load_audio(src, None, offset=offset or 0.0, duration=duration)
    buf = io.BytesIO()  # encoded in memory: a full disk then fails in one plain write, not inside libsndfile
    sf.write(buf, to_pcm16(audio), sample_rate, format="WAV", subtype="PCM_16")
    data = buf.getvalue()

    def commit_record(tmp: Path) -> None:
        if record is not None:
            write_json(
                record, {"source": source, "wav": dict(_stamp(tmp), sha256=hashlib.sha256(data).hexdigest())}
            )

    with atomic_write(dest, before_rename=commit_record) as handle:
        handle.write(data)
    return len(audio), sample_rate


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _convert(task: tuple) -> tuple:
    """One WAV and its record, in a worker process. Returns ``(uid, n, sr, error, disk_full)``."""
    uid, src, dest, offset, duration, record, source = task
    try:
        n, sr = write_wav(src, dest, offset, duration, record=record, source=source)
    except DiskFullError as exc:
        return uid, None, None, str(exc), True
    except (AudioError, OSError) as exc:
        return uid, None, None, str(exc) if isinstance(exc, AudioError) else f"{src}: {exc}", False
    return uid, n, sr, None, False


def convert_all(tasks: list[tuple], jobs: int = 1, progress: bool = True) -> Iterable[tuple]:
    """Run :func:`write_wav` over ``(uid, src, dest, offset, duration, record, source)`` tasks.

    Uses ``jobs`` worker processes (:func:`jukemir.workers.process_pool`: none
    outlives this process). Yields ``(uid, n_samples, sample_rate, error)`` per
    task (error None on success); raises DiskFullError when space runs out.
    """
    from tqdm import tqdm

    chunksize = max(1, min(16, len(tasks) // (4 * max(1, jobs))))
    with tqdm(total=len(tasks), desc="wav", unit="file", disable=not progress or not tasks) as bar:
        for uid, n, sr, error, disk_full in imap_in_pool(_convert, tasks, jobs, chunksize):
            if disk_full:
                raise DiskFullError(errno.ENOSPC, error)
            yield uid, n, sr, error
            bar.update()


def source_record(source: Source) -> dict:
    """What a WAV is made from: the source file's name, size and mtime, and the clip in it."""
    path = Path(source.path)
    try:
        st = path.stat()
        size, mtime_ns = st.st_size, st.st_mtime_ns
    except OSError:
        size = mtime_ns = None
    return {
        "name": path.name,
        "size": size,
        "mtime_ns": mtime_ns,
        "offset": source.offset,
        "duration": source.duration,
    }


def current_wav(dest: Path, record_path: Path, source: dict) -> tuple[int, int] | None:
    """``(frames, sample_rate)`` of ``dest`` if its record vouches for it and for ``source``, else None.

    The record must name this source (name, size, mtime, clip) and this WAV:
    its size, and its mtime or, when the file was copied (mtime changed), its
    sha256 (the record's mtime is then refreshed). A WAV without a record, or
    with a record of another WAV, is not current.
    """
    have = wav_frames(dest)
    if have is None:
        return None
    try:
        record = read_json(record_path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if "wav" not in record:  # an older version's record, written after its WAV was complete: adopt it
        if record != source:
            return None
        record = {"source": source, "wav": dict(_stamp(dest), sha256=file_checksum(dest))}
        write_json(record_path, record)
    wav = record.get("wav") or {}
    if record.get("source") != source:
        return None
    stamp = _stamp(dest)
    if wav.get("size") != stamp["size"]:
        return None
    if wav.get("mtime_ns") != stamp["mtime_ns"]:
        if wav.get("sha256") != file_checksum(dest):
            return None
        write_json(record_path, dict(record, wav=dict(wav, mtime_ns=stamp["mtime_ns"])))
    return have


def write_processed(
    name: str,
    meta: dict,
    sources: dict[str, Source | None],
    *,
    out_dir: str | os.PathLike | None = None,
    jobs: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    spec: dict | None = None,
) -> ProcessReport:
    """Write ``wav/<uid>.wav`` for every uid with a source, then ``meta.json`` (only if all succeeded).

    ``out_dir`` defaults to ``processed/<name>``. Existing WAVs that their
    records vouch for are kept unless ``overwrite``. ``meta.json`` (and
    ``spec``, written as ``dataset.json`` just before it) exists only while it
    describes exactly the WAVs there: it is removed before any WAV is
    (re)written or when the items changed, and written again at the end of a
    run in which every file converted; WAVs of items no longer listed are then
    removed.
    """
    out = Path(out_dir) if out_dir is not None else Layout().processed(name)
    with FileLock(out / ".lock", waiting=f"{out}: another process is writing this dataset; waiting"):
        return _write_processed(name, meta, sources, out, jobs, progress, overwrite, spec)


def _without_durations(meta: dict) -> dict:
    """``meta`` without ``clip.clip_duration`` (measured on the WAVs written, not part of the items)."""
    out = {}
    for uid, record in meta.items():
        if isinstance(record, dict) and isinstance(record.get("clip"), dict):
            record = dict(record, clip={k: v for k, v in record["clip"].items() if k != "clip_duration"})
        out[uid] = record
    return out


def _write_processed(name, meta, sources, out: Path, jobs, progress, overwrite, spec) -> ProcessReport:
    start = time.time()
    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    records = out / STATE_DIR / "sources"
    for folder in (wav_dir, records):  # this process holds the lock: temporaries there are a dead one's
        remove_stale_temporaries(folder, older_than_s=0)
    remove_stale_temporaries(out)
    report = ProcessReport(name, str(out))
    lengths: dict[str, tuple[int, int]] = {}
    tasks = []
    for uid in meta:
        if not is_file_name(uid):
            raise UserError(f"dataset {name}: uid {uid!r} cannot be a file name")
        source = sources.get(uid)
        if source is None:
            report.no_audio += 1
            continue
        dest, record_path, wanted = wav_dir / f"{uid}.wav", records / f"{uid}.json", source_record(source)
        have = None if overwrite else current_wav(dest, record_path, wanted)
        if have is not None:
            lengths[uid] = have
            report.skipped += 1
            continue
        report.stale += dest.exists()
        tasks.append(
            (uid, str(source.path), str(dest), source.offset, source.duration, str(record_path), wanted)
        )
    meta_path, spec_path = out / "meta.json", out / SPEC_FILE
    if meta_path.exists() and (
        tasks or _without_durations(_read_or_none(meta_path)) != _without_durations(meta)
    ):
        meta_path.unlink()  # it would describe other WAVs or items than those being written
    if spec is not None and spec_path.exists() and _read_or_none(spec_path) != spec:
        spec_path.unlink()
    results = convert_all(tasks, jobs, progress)
    try:
        for uid, n, sr, error in results:
            if error is not None:
                report.failed.append((uid, error))
            else:
                lengths[uid] = (n, sr)
                report.written += 1
    except BaseException:  # interrupted, terminated, disk full: stop the workers, then tidy up after them
        results.close()
        for folder in (wav_dir, records):
            remove_stale_temporaries(folder, older_than_s=0)
        raise
    if report.ok:
        final = {}
        for uid, record in meta.items():
            record = copy.deepcopy(record)
            if uid in lengths and isinstance(record.get("clip"), dict):
                n, sr = lengths[uid]
                record["clip"]["clip_duration"] = n / sr
            final[uid] = record
        if spec is not None:
            write_json(spec_path, spec)
        write_json(meta_path, final)
        _remove_orphans(wav_dir, records, set(lengths))
    report.seconds = time.time() - start
    return report


def _read_or_none(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _remove_orphans(wav_dir: Path, records: Path, keep: set) -> None:
    """Delete the WAVs (and records) of items the dataset no longer lists."""
    for folder, suffix in ((wav_dir, ".wav"), (records, ".json")):
        for path in folder.glob(f"*{suffix}"):
            if path.name[: -len(suffix)] not in keep:
                path.unlink(missing_ok=True)


def process_dataset(
    name: str,
    *,
    jobs: int = 1,
    metadata: str = "canonical",
    mirror: str | None = None,
    progress: bool = True,
) -> ProcessReport:
    """Download what is missing, unpack, and write ``processed/<dataset>/`` for benchmark ``name``.

    ``metadata``: ``canonical`` (the paper's files, the default) or ``derived``
    (recomputed from the raw annotations as the original did).
    """
    if metadata not in METADATA_CHOICES:
        raise UserError(f"metadata must be one of {METADATA_CHOICES}, got {metadata!r}")
    name = canonical_name(name)
    module = dataset_module(name)
    work = work_dir(name)
    module.prepare(work, mirror=mirror, jobs=jobs)
    meta = (
        canonical_metadata(name, mirror=mirror) if metadata == "canonical" else module.derive_metadata(work)
    )
    sources = {uid: module.audio_source(uid, record, work) for uid, record in meta.items()}
    return write_processed(name, meta, sources, jobs=jobs, progress=progress)


# ---------------------------------------------------------------- metadata check
def _differences(a, b, path: str):
    """Yield ``(field, a, b)`` wherever two metadata records disagree (numbers within tolerance)."""
    if path == "clip.clip_duration":  # depends on the decoder, not on the annotations
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                if sub != "clip.clip_duration":
                    yield sub, a.get(key, "<missing>"), b.get(key, "<missing>")
            else:
                yield from _differences(a[key], b[key], sub)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for x, y in zip(a, b):
            yield from _differences(x, y, path)
    elif _is_number(a) and _is_number(b):
        tol = AUDIO_DURATION_TOLERANCE_S if path == "clip.audio_duration" else 1e-9
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=tol):
            yield path, a, b
    elif a != b:
        yield path, a, b


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare_metadata(derived: dict, canonical: dict, max_examples: int = 3) -> list[str]:
    """Human-readable differences between two ``meta.json`` dicts; empty when they agree.

    uids, splits, labels, clips and extras are compared; ``clip_duration`` is
    not (it is measured on the decoded audio), and ``clip.audio_duration`` may
    differ by up to :data:`AUDIO_DURATION_TOLERANCE_S` seconds.
    """
    problems = []
    only_canonical = sorted(set(canonical) - set(derived))
    only_derived = sorted(set(derived) - set(canonical))
    if only_canonical:
        problems.append(
            f"{len(only_canonical)} uids only in the canonical metadata "
            f"(e.g. {only_canonical[:max_examples]})"
        )
    if only_derived:
        problems.append(
            f"{len(only_derived)} uids only in the derived metadata (e.g. {only_derived[:max_examples]})"
        )
    by_field: dict[str, list] = {}
    for uid in sorted(set(derived) & set(canonical)):
        for name, a, b in _differences(derived[uid], canonical[uid], ""):
            by_field.setdefault(name, []).append((uid, a, b))
    for name, rows in sorted(by_field.items()):
        examples = "; ".join(f"{uid}: {a!r} vs {b!r}" for uid, a, b in rows[:max_examples])
        problems.append(f"{name}: {len(rows)} records differ (derived vs canonical, e.g. {examples})")
    return problems


def verify_metadata(name: str, *, jobs: int = 4, mirror: str | None = None) -> list[str]:
    """Derive ``name``'s metadata from its raw annotations and compare it with the canonical files.

    Downloads what is missing (GiantSteps needs every MP3: its clips depend on
    the durations). Returns :func:`compare_metadata`'s list (empty: they agree).
    """
    name = canonical_name(name)
    module = dataset_module(name)
    work = work_dir(name)
    module.prepare(work, mirror=mirror, jobs=jobs)
    return compare_metadata(module.derive_metadata(work), canonical_metadata(name, mirror=mirror))


def split_counts(meta: dict) -> dict:
    """``{"train": n, "valid": n, "test": n, None: n}`` of a ``meta.json`` dict."""
    counts = {"train": 0, "valid": 0, "test": 0, None: 0}
    for record in meta.values():
        counts[record.get("split")] += 1
    return counts
