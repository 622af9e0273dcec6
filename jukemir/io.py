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
import gzip
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

TMP_MARK = ".jukemir-tmp-"


_UMASK = os.umask(0)
os.umask(_UMASK)


class DiskFullError(OSError):
    """Raised when a write fails because the device is full (ENOSPC)."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", overwrite: bool = True) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it to ``path``.

    ``overwrite=False`` refuses to replace an existing file (``FileExistsError``),
    using a hard link so that two concurrent writers cannot both win.
    On ENOSPC a :class:`DiskFullError` naming ``path`` is raised and nothing is
    left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_MARK + path.name + ".", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError if another writer won
            os.unlink(tmp)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(errno.ENOSPC, f"{path}: no space left on device") from exc
        raise
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
    """Load a ``.npy`` file written by :func:`save_npy` (no pickles)."""
    return np.load(path, allow_pickle=False)


def write_json(path: str | os.PathLike, obj: Any, overwrite: bool = True) -> None:
    """Atomically write ``obj`` as JSON (indent 2, sorted keys; gzip if ``.gz``)."""
    text = json.dumps(obj, indent=2, sort_keys=True)
    data = text.encode("utf-8")
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON written by :func:`write_json` (gzip chosen by the ``.gz`` suffix)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line; a single ``write`` so concurrent appends do not interleave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
