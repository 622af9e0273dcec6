"""THE folder runner: embed every file of an input folder into ``<stem>.npy`` files.

This is the contract every container runs (docs/architecture.md)::

    jukemir extract REPRESENTATION INPUT_DIR OUTPUT_DIR [--batch_size N --batch_idx I]

* Every non-hidden entry of ``INPUT_DIR`` but folders is an input, whatever
  its extension (so a broken link or a FIFO is reported, not silently
  dropped), sorted by name (then, for a batch-dependent representation, in
  its own order: :func:`batch_dependent`). Batch ``I`` is ``files[I*N:(I+1)*N]``; an
  index past the end is an error.
* The output of ``x.wav`` is ``OUTPUT_DIR/x.npy``, a float32 array of the
  representation's output shape (1-D for the paper's features).
* Outputs are written atomically. Beside each, ``OUTPUT_DIR/.jukemir/provenance/
  <stem>.json`` records the representation, its version and options, the
  source file's size and mtime, and the sha256 of the ``.npy`` bytes. An
  existing output is reused only if it matches (a stale one — other options,
  changed source, half-replaced — is recomputed and reported); an output with
  no provenance record (e.g. dropped-in precomputed features) is kept.
* Workers on the same folder claim each output with a lock (an ``flock``,
  released by the kernel when its holder dies), so two workers never compute
  the same file at once and a killed worker never leaves a stale lock. A file
  another worker holds is done last: the runner waits for that worker and
  takes over whatever it did not finish, so a run that exits 0 leaves every
  selected output valid. Temporaries of a killed writer are removed when the
  output is claimed again.
* A file that cannot be decoded or embedded is reported on stderr (``file:
  reason``) and in ``OUTPUT_DIR/.jukemir/errors.jsonl``, and skipped; the
  others finish; :attr:`FolderReport.ok` is False (exit status 1).

The runner never touches models; representations never touch files.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..device import torch_device
from ..errors import NotFoundError, UserError, one_line
from ..io import (
    TMP_MARK,
    DiskFullError,
    FileLock,
    FolderClaim,
    append_jsonl,
    atomic_write,
    no_space_error,
    parse_npy,
    read_json,
    remove_stale_temporaries,
    write_json,
)
from ..workers import take_into
from . import Representation, get_representation, representation_class

STATE_DIR = ".jukemir"
STALE_TMP_S = 6 * 3600.0  # temporaries this old belong to dead writers, whatever output they were for


@dataclass
class FolderReport:
    """What one run did. ``failed`` holds ``(file, reason)`` pairs."""

    representation: str
    output_dir: str
    done: int = 0
    skipped: int = 0
    busy: int = 0  # outputs another worker finished while this run waited for it
    stale: int = 0
    foreign: int = 0  # outputs without a provenance record (e.g. precomputed features), kept
    nonfinite: int = 0
    failed: list = field(default_factory=list)
    seconds: float = 0.0

    COUNTS = ("done", "skipped", "busy", "stale", "foreign", "nonfinite")

    @property
    def ok(self) -> bool:
        return not self.failed

    def merge(self, other: FolderReport) -> None:
        """Add the counts and failures of another run over the same output (e.g. one batch of a sharded
        run)."""
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed.extend(other.failed)

    def summary(self) -> str:
        extra = f", {self.busy} done by another worker" if self.busy else ""
        extra += f", {self.stale} stale recomputed" if self.stale else ""
        extra += (
            f", {self.foreign} without provenance kept (--overwrite recomputes them)" if self.foreign else ""
        )
        extra += f", {self.nonfinite} with non-finite values" if self.nonfinite else ""
        return (
            f"extract {self.representation}: {self.done} done, {self.skipped} skipped, "
            f"{len(self.failed)} failed{extra} in {self.seconds:.1f} s -> {self.output_dir}"
        )


# A folder named like an audio file is reported as a bad input rather than silently passed over.
AUDIO_SUFFIXES = frozenset(
    (
        ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .m4a .aac .wma .mp4"
    ).split()
)


def list_inputs(input_dir: str | os.PathLike) -> list[Path]:
    """The sorted inputs of ``input_dir``: its non-hidden entries but sub-folders.

    A sub-folder whose name ends like an audio file (``x.wav/``) is listed too, so
    that it is reported as a bad input instead of being silently skipped.

    Raises:
        NotFoundError: ``input_dir`` does not exist.
        UserError: ``input_dir`` is a file, or holds no input.
    """
    input_dir = Path(input_dir)
    if not input_dir.exists():
        raise NotFoundError(f"{input_dir}: no such input folder")
    if not input_dir.is_dir():
        raise UserError(f"{input_dir}: is a file, not a folder; extract embeds every audio file of a folder")
    try:
        entries = list(input_dir.iterdir())
    except OSError as exc:
        raise UserError(f"{input_dir}: cannot list the input folder ({exc.strerror or exc})") from None
    files = sorted(
        p
        for p in entries
        if not p.name.startswith(".") and (not p.is_dir() or p.suffix.lower() in AUDIO_SUFFIXES)
    )
    if not files:
        raise UserError(
            f"{input_dir}: no input files (sub-folders and names starting with '.' are not inputs)"
        )
    return files


def prepare_output_dir(output_dir: str | os.PathLike) -> Path:
    """Create ``output_dir`` if needed and return it; refuse a path that is a file or cannot be written."""
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder; give a folder for the .npy outputs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{out_dir}: a parent of the output folder is a file") from None
    except OSError as exc:
        full = no_space_error(exc, out_dir)
        if isinstance(full, DiskFullError):
            raise full from None
        raise UserError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"{out_dir}: the output folder is not writable")
    return out_dir


def select_batch(files: Sequence, batch_size: int | None, batch_idx: int | None) -> list:
    """``files[batch_idx*batch_size:(batch_idx+1)*batch_size]``; all files when ``batch_idx`` is None.

    (As the original: without ``--batch_idx`` every file is processed, and
    ``--batch_size`` only sets the batches of a batch-dependent model.)
    """
    files = list(files)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    if batch_idx is None:
        return files
    if batch_size is None:
        raise UserError("--batch_idx needs --batch_size")
    n_batches = -(-len(files) // batch_size)
    if not 0 <= batch_idx < n_batches:
        raise UserError(
            f"invalid batch index {batch_idx}: {len(files)} files make {n_batches} batch(es) of {batch_size} "
            f"(valid indices 0..{n_batches - 1})"
        )
    return files[batch_idx * batch_size : (batch_idx + 1) * batch_size]


def _source_record(path: Path) -> dict:
    try:
        st = path.stat()
    except OSError:  # gone or a broken link: matches no record, so its output reads as stale
        return {"name": path.name, "size": None, "mtime_ns": None}
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Output:
    """Paths and provenance of one input's output."""

    def __init__(self, src: Path, out_dir: Path, provenance: dict):
        self.src = src
        self.npy = out_dir / (src.stem + ".npy")
        self.record = out_dir / STATE_DIR / "provenance" / (src.stem + ".json")
        self.lock = FileLock(out_dir / STATE_DIR / "locks" / (src.stem + ".lock"))
        self.provenance = provenance

    def status(self, rep: Representation) -> str:
        """``missing``, ``valid``, ``foreign`` (kept, no record) or ``stale``."""
        if not self.npy.exists():
            return "missing"
        try:
            data = self.npy.read_bytes()
            array = parse_npy(data, self.npy)
            rep.check_output(array)
        except Exception:
            return "stale"
        if not self.record.exists():
            return "foreign"
        try:
            record = read_json(self.record)
        except Exception:
            return "stale"
        expected = dict(self.provenance, source=_source_record(self.src))
        same = all(record.get(k) == v for k, v in expected.items())
        if not same or record.get("sha256") != hashlib.sha256(data).hexdigest():
            return "stale"
        return "valid"

    def write(self, features: np.ndarray) -> None:
        """Write the record (with the new bytes' hash) first, then the array: a kill in between
        leaves a record whose hash does not match, which reads as stale."""
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        data = buf.getvalue()
        record = dict(self.provenance, source=_source_record(self.src), shape=list(features.shape))
        record["sha256"] = hashlib.sha256(data).hexdigest()
        write_json(self.record, record)
        with atomic_write(self.npy, "wb") as handle:
            handle.write(data)

    def claim(self, wait: bool = False) -> bool:
        """Take this output's lock; False if another worker holds it (``wait``: block until it is free).

        Once held, temporaries a killed writer of this output left are removed.
        """
        if not self.lock.acquire(wait):
            return False
        for folder, name in ((self.npy.parent, self.npy.name), (self.record.parent, self.record.name)):
            for stale in folder.glob(glob.escape(TMP_MARK + name) + ".*"):
                stale.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        self.lock.release()


def _remove_dead_locks(lock_dir: Path) -> None:
    """Delete lock files that no live worker holds (left by workers killed before their release)."""
    for path in lock_dir.glob("*.lock"):
        lock = FileLock(path)
        if lock.acquire():
            lock.release()


def run_folder(
    representation: str | Representation,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    batch_size: int | None = None,
    batch_idx: int | None = None,
    options: dict | None = None,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> FolderReport:
    """Embed the files of ``input_dir`` (or one batch of them) into ``output_dir``.

    Args:
        representation: a registry name (built here with ``options``) or a built
            :class:`~jukemir.representations.base.Representation`.
        batch_size, batch_idx: process only ``files[I*N:(I+1)*N]`` of the ordered list.
        workers: decoding threads that run ahead of the model.
        overwrite: recompute outputs even when a valid one exists.
    Returns:
        a :class:`FolderReport`; a one-line summary is printed to stderr.
    Raises:
        ValueError / FileNotFoundError for bad arguments (before any work),
        :class:`~jukemir.io.DiskFullError` when the output device is full.
    """
    start = time.time()
    files = list_inputs(input_dir)
    if isinstance(representation, Representation):
        rep, name = representation, representation.name
        cls = type(rep)
    else:
        rep, name = None, str(representation)
        cls = representation_class(name)  # an unknown name fails here, before any work
    if batch_dependent(cls) and batch_size is None and batch_idx is not None:
        batch_size = cls.default_batch_size
    select_batch(files, batch_size, batch_idx)  # validate the batch before loading a model
    if rep is None and (options or {}).get("device") is not None:
        torch_device(options["device"])  # a device that is not there: say so before writing anything
    if Path(output_dir).resolve() == Path(input_dir).resolve():
        raise UserError(
            f"{output_dir}: the output folder is the input folder; its .npy outputs would become "
            "inputs of the next run: use another output folder"
        )
    out_dir = prepare_output_dir(output_dir)
    remove_stale_temporaries(out_dir, older_than_s=STALE_TMP_S)
    remove_stale_temporaries(out_dir / STATE_DIR / "provenance", older_than_s=STALE_TMP_S)
    _remove_dead_locks(out_dir / STATE_DIR / "locks")
    report = FolderReport(name, str(out_dir))
    if rep is None:
        rep = get_representation(name, **(options or {}))
    ordered = rep.order_files(files) if batch_dependent(rep) and hasattr(rep, "order_files") else files
    selected = select_batch(ordered, batch_size, batch_idx)
    provenance = rep.provenance()
    outputs = [_Output(f, out_dir, provenance) for f in selected]
    # Two inputs with one stem (a.wav, a.flac) would write the same a.npy: the first in name order owns it,
    # in whichever batch either falls, so every run and every batching decides the same way.
    owner: dict[str, Path] = {}
    for src in sorted(files):
        owner.setdefault(src.stem + ".npy", src)
    with FolderClaim(out_dir / STATE_DIR, provenance, f"these {name} features"):
        return _run_claimed(
            rep, name, outputs, owner, out_dir, report, batch_size, workers, overwrite, progress, start
        )


def _run_claimed(rep, name, outputs, owner, out_dir, report, batch_size, workers, overwrite, progress, start):
    """:func:`run_folder` once this process holds the output folder (see :class:`~jukemir.io.FolderClaim`)."""
    errors_log = out_dir / STATE_DIR / "errors.jsonl"

    def fail(src: Path, reason: str) -> None:
        reason = one_line(reason)
        report.failed.append((str(src), reason))
        print(one_line(f"jukemir extract {name}: {src}: {reason}"), file=sys.stderr)
        append_jsonl(
            errors_log, {"file": str(src), "reason": reason, "representation": name, "time": time.time()}
        )

    todo: list[_Output] = []
    for out in outputs:
        if owner[out.npy.name] != out.src:
            fail(out.src, f"same output name as {owner[out.npy.name].name} ({out.npy.name}); rename one")
            continue
        status = "missing" if overwrite else out.status(rep)
        if status in ("valid", "foreign"):
            report.skipped += 1
            report.foreign += status == "foreign"
        else:
            report.stale += status == "stale"
            todo.append(out)
    todo_set = set(todo)

    # Group the work: batch-dependent models see each selected chunk as one batch.
    if batch_dependent(rep):
        chunk = batch_size or getattr(rep, "default_batch_size", None) or len(todo) or 1
        groups = []
        for i in range(0, len(outputs), chunk):
            group = outputs[i : i + chunk]
            if any(o in todo_set for o in group):
                groups.append(group)  # recompute the whole batch: features depend on batch mates
    else:
        step = max(1, rep.preferred_batch)
        groups = [todo[i : i + step] for i in range(0, len(todo), step)]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(g) for g in groups), desc=f"extract {name}", unit="file", dynamic_ncols=True)

    def load(out: _Output):
        try:
            return rep.load(out.src), None
        except Exception as exc:
            return None, exc

    held_elsewhere = []  # (group, outputs another worker held when this run reached them)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            pending: deque = deque()
            group_iter = iter(groups)

            def submit_next():
                group = next(group_iter, None)
                if group is not None:
                    pending.append((group, [pool.submit(load, o) for o in group]))

            for _ in range(2):  # keep one group decoding while the model runs on another
                submit_next()
            while pending:
                group, futures = pending.popleft()
                submit_next()
                busy = _run_group(
                    rep, group, [f.result() for f in futures], todo_set, report, fail, overwrite
                )
                if busy:
                    held_elsewhere.append((group, busy))
                elif bar is not None:
                    bar.update(len(group))
        # Wait for the other worker, then do whatever it did not finish (e.g. because it was killed).
        # Locks are taken in file order (a worker only waits for files after those it holds): no deadlock.
        if held_elsewhere:
            n_busy = sum(len(busy) for _, busy in held_elsewhere)
            print(
                f"jukemir extract {name}: another worker holds {n_busy} file(s); waiting for it",
                file=sys.stderr,
            )
        for group, busy in held_elsewhere:
            members = group if batch_dependent(rep) else busy
            _run_group(
                rep, members, [load(o) for o in members], set(busy), report, fail, overwrite, wait=True
            )
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
        _remove_dead_locks(out_dir / STATE_DIR / "locks")  # e.g. one an interrupt caught being created
    report.seconds = time.time() - start
    print(report.summary(), file=sys.stderr)
    return report


def batch_dependent(rep) -> bool:
    """Whether ``rep`` (a representation or its class) makes features that depend on their batch mates.

    Only the original choi does. Such a representation declares, and the runner
    reads here and nowhere else: ``batch_dependent = True``, ``default_batch_size``
    (the chunk size when ``--batch_size`` is not given) and optionally
    ``order_files(paths)`` (the order the sorted inputs are chunked in). Each
    chunk then goes to ``rep.batch`` as one batch, and is recomputed whole.
    """
    return bool(getattr(rep, "batch_dependent", False))


def _run_group(rep, group, loaded, todo, report, fail, overwrite=False, wait=False) -> list:
    """Embed one group and write the outputs in ``todo`` whose lock this worker gets.

    Returns the outputs another worker holds (none with ``wait``: it blocks for them).
    An output another worker finished meanwhile is not computed again.
    """
    claimed, busy = [], []
    try:
        for out in group:
            if out not in todo:
                continue
            if not take_into(claimed, out, out.claim, wait):
                busy.append(out)
            elif not overwrite and out.status(rep) in ("valid", "foreign"):
                claimed.remove(out)
                out.release()  # another worker wrote it after this run listed its work
                report.busy += 1
        if not claimed:
            return busy
        # a batch-dependent model needs the whole group; otherwise embed only what this worker holds
        whole = batch_dependent(rep)
        ok = [(o, a) for o, (a, e) in zip(group, loaded) if e is None and (whole or o in claimed)]
        for out, (_, err) in zip(group, loaded):
            if err is not None and out in claimed:
                fail(out.src, err.reason if hasattr(err, "reason") else err)
        if not ok:
            return busy
        audios = [a for _, a in ok]
        try:
            features = rep.batch(audios)
        except DiskFullError:
            raise
        except Exception as exc:
            if whole or len(ok) == 1:
                for out, _ in ok:
                    if out in claimed:
                        fail(out.src, f"{type(exc).__name__}: {exc}")
                return busy
            features = []
            for _out, audio in ok:  # isolate the file that broke the batch
                try:
                    features.extend(rep.batch([audio]))
                except Exception as exc1:
                    features.append(exc1)
        for (out, _), feat in zip(ok, features):
            if out not in claimed:
                continue  # a batch mate another worker is writing
            if isinstance(feat, Exception):
                fail(out.src, f"{type(feat).__name__}: {feat}")
                continue
            try:
                feat = rep.check_output(feat)
            except ValueError as exc:
                fail(out.src, str(exc))
                continue
            bad = int(np.size(feat) - np.isfinite(feat).sum())
            if bad:
                if not rep.may_be_nonfinite:
                    fail(out.src, f"model produced {bad} non-finite values (NaN/inf)")
                    continue
                report.nonfinite += 1
                print(
                    f"jukemir extract {rep.name}: warning: {out.src}: {bad} of {np.size(feat)} values are "
                    f"non-finite (the original's numeric behaviour; see the representation's fixed mode)",
                    file=sys.stderr,
                )
            out.write(feat)
            report.done += 1
        return busy
    finally:
        for out in claimed:
            out.release()
