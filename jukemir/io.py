"""Atomic file writes and the JSON / NumPy formats every stage uses.

Every output of the pipeline goes through :func:`atomic_write`: the bytes are
written to a temporary file in the destination folder, flushed and fsynced,
then renamed over the destination. A killed process therefore leaves either
the old file, the new file, or a stray ``.tmp`` file that no stage ever reads
(stale ones are removed by :func:`remove_stale_temporaries`), never a half
file under the real name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import JukemirError, UserError, one_line
from .workers import signals_held

TMP_MARK = ".jukemir-tmp-"


_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFullError(JukemirError, OSError):
    """Raised when a write fails for lack of space: a full device (ENOSPC), an exhausted disk
    quota (EDQUOT) or a file-size limit (EFBIG). ``str()`` is one line naming the file."""

    def __str__(self) -> str:
        return self.strerror


_NO_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left on device (disk quota exceeded)",
    errno.EFBIG: "file too large (the file system's or the process's file-size limit)",
}


def no_space_error(exc: OSError, path: str | os.PathLike) -> OSError:
    """``exc`` as a :class:`DiskFullError` naming ``path`` when it is ENOSPC/EDQUOT/EFBIG, else ``exc``."""
    if isinstance(exc, DiskFullError) or exc.errno not in _NO_SPACE:
        return exc
    return DiskFullError(exc.errno, f"{path}: {_NO_SPACE[exc.errno]}")


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", overwrite: bool = True, before_rename: Callable | None = None
) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    ``overwrite=False`` refuses to replace an existing file (``FileExistsError``),
    using a hard link so that two concurrent writers cannot both win.
    ``before_rename(tmp_path)`` runs once the bytes are on disk and before the
    rename: the place to commit what describes the file (its provenance), so
    that a file under the real name is never without it.
    When space runs out (ENOSPC, EDQUOT, EFBIG) a :class:`DiskFullError` naming
    ``path`` is raised and nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_MARK + path.name + ".", dir=path.parent)
    except OSError as exc:
        raise no_space_error(exc, path) from exc
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename(Path(tmp))
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError if another writer won
            os.unlink(tmp)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        error = no_space_error(exc, path)
        if error is exc:
            raise
        raise error from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 3600.0) -> int:
    """Delete temporary files left in ``folder`` by killed writers; return how many."""
    removed = 0
    now = time.time()
    for tmp in Path(folder).glob(TMP_MARK + "*"):
        with contextlib.suppress(FileNotFoundError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
    return removed


def save_npy(path: str | os.PathLike, array: np.ndarray, overwrite: bool = True) -> None:
    """Atomically write ``array`` as a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(buf.getvalue())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file (no pickles), checking its header against its size before allocating anything.

    Raises :class:`~jukemir.errors.UserError` naming the file when it is not a
    ``.npy`` file, holds objects, or its header claims more (or fewer) values
    than the file holds: a corrupt header can never ask for a giant allocation.
    """
    return parse_npy(Path(path).read_bytes(), path)


def parse_npy(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """The array of ``.npy`` bytes ``data`` (see :func:`load_npy`); ``path`` names it in errors."""
    from numpy.lib import format as npy

    handle = io.BytesIO(data)
    try:
        version = npy.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = npy.read_array_header_2_0(handle)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise UserError(f"{path}: not a .npy file ({one_line(exc)})") from None
    if dtype.hasobject:
        raise UserError(f"{path}: holds Python objects, not numbers; refusing to load it")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    expected = count * dtype.itemsize
    held = len(data) - handle.tell()
    if held != expected:
        raise UserError(
            f"{path}: its header says shape {tuple(shape)} of {dtype} ({expected} bytes) "
            f"but it holds {held} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=handle.tell())
    return array.reshape(shape, order="F" if fortran else "C").copy()


def json_bytes(obj: Any, gz: bool = False) -> bytes:
    """``obj`` as the bytes :func:`write_json` writes (indent 2, sorted keys; gzip-compressed if ``gz``)."""
    data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")
    return gzip.compress(data, mtime=0) if gz else data


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True) -> None:
    """Atomically write ``obj`` as JSON (indent 2, sorted keys; gzip if ``.gz``)."""
    data = json_bytes(obj, gz=str(path).endswith(".gz"))
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)


def write_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Atomically write ``data`` to ``path`` unless the file already holds exactly those bytes.

    Returns whether it wrote. An identical file is left untouched, modification
    time included, so what was derived from it (features, whose provenance
    records the source's size and mtime) stays valid.
    """
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    with atomic_write(path) as handle:
        handle.write(data)
    return True


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON written by :func:`write_json` (gzip chosen by the ``.gz`` suffix).

    Malformed content raises ``ValueError`` naming the file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (ValueError, EOFError, gzip.BadGzipFile) as exc:  # JSONDecodeError, UnicodeDecodeError, bad gzip
        raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line; a single ``write`` so concurrent appends do not interleave.

    Raises :class:`DiskFullError` when space runs out (a partly written line is
    then cut off again, so the file stays one record per line).
    """
    path = Path(path)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise no_space_error(exc, path) from exc
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                os.write(fd, line[written:])  # reports the error that cut the first write short
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise no_space_error(exc, path) from exc
    finally:
        os.close(fd)


class FileLock:
    """THE file lock: exclusive, on ``path``, shared by processes on any machine mounting the same folder.

    It is an ``flock`` on the lock file, so the kernel releases it when its
    holder dies, even by SIGKILL: a lock is never left stale. :meth:`release`
    deletes the file; :meth:`acquire` re-checks after locking that the file it
    locked is still the one at ``path``, so deletion cannot let two holders in.
    On a file system without ``flock`` (e.g. Lustre mounted without it) locking
    is skipped with a warning, and concurrent workers are not protected.
    """

    _warned = False

    def __init__(self, path: str | os.PathLike, waiting: str | None = None):
        """``waiting``: printed to stderr when ``with FileLock(...)`` has to wait for another holder."""
        self.path = Path(path)
        self.waiting = waiting
        self._fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; ``False`` if another holder has it (``wait=True``: block until it is free).

        Each attempt runs with Ctrl-C and SIGTERM held back, so an interrupt never
        leaves a lock taken but not recorded (or a file created and not locked);
        a wait is a series of attempts, so it can still be interrupted.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise no_space_error(exc, self.path) from exc
        while True:
            with signals_held():
                got = self._attempt()
            if got:
                return True
            if got is False and not wait:
                return False
            if got is False:
                time.sleep(0.02)

    def _attempt(self) -> bool | None:
        """One try: True (held), False (another holder has it), None (it was deleted meanwhile: try again)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise no_space_error(exc, self.path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                os.close(fd)
                raise
            self._warn_unsupported()
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            self._fd = fd
            return True
        os.close(fd)  # the holder released (and deleted) it meanwhile: lock the new file
        return None

    def release(self) -> None:
        """Delete the lock file and release the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with signals_held():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def _warn_unsupported(self) -> None:
        if not FileLock._warned:
            FileLock._warned = True
            print(
                f"jukemir: warning: {self.path.parent}: the file system does not support file locks; "
                f"do not run two workers on the same folder",
                file=sys.stderr,
            )

    def __enter__(self) -> FileLock:
        if not self.acquire():
            if self.waiting:
                print(f"jukemir: {self.waiting}", file=sys.stderr)
            self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class FolderClaim:
    """Any number of processes doing the same kind of work may use a folder at once; another kind is refused.

    The claimants hold a shared ``flock`` on ``<state>/owner.lock`` for as long
    as they work (the kernel drops it when a holder dies, even by SIGKILL), and
    ``<state>/owner.json`` records what kind of work they do (``identity``: a
    JSON-able dict, e.g. a representation and its options). A newcomer of the
    same identity joins them; one of another identity raises
    :class:`~jukemir.errors.UserError` while any holder is alive, and takes the
    folder over when none is (it was then simply used before, for other work).
    """

    def __init__(self, state_dir: str | os.PathLike, identity: dict, what: str):
        self.state_dir = Path(state_dir)
        self.identity = json.loads(json.dumps(identity, sort_keys=True))
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Join the holders or take the folder over; raise UserError if others of another identity hold it."""
        owner_file = self.state_dir / "owner.json"
        with FileLock(self.state_dir / "claim.lock"):  # one newcomer at a time
            for stale in self.state_dir.glob(TMP_MARK + "owner.json.*"):  # a killed newcomer's
                stale.unlink(missing_ok=True)
            fd = os.open(self.state_dir / "owner.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    alone = True
                except BlockingIOError:
                    alone = False
                except OSError as exc:  # no locks on this file system: claim without protection
                    if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    alone = True
                if alone:
                    if _read_or_none(owner_file) != self.identity:
                        write_json(owner_file, self.identity)
                else:
                    current = _read_or_none(owner_file)
                    if current != self.identity:
                        raise UserError(
                            f"{self.state_dir.parent}: another process is writing "
                            f"{_describe(current)} into this folder right now; "
                            f"{self.what} would mix with them: use another folder, or wait for it"
                        )
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive (alone) or joining other shared holders
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd

    def release(self) -> None:
        """Stop holding the folder (the lock file stays: others may hold it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderClaim:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_or_none(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _describe(identity) -> str:
    if isinstance(identity, dict) and "representation" in identity:
        options = identity.get("options") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "default options"
        return f"{identity['representation']} features ({shown})"
    return "other outputs"
