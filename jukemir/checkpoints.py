"""THE reader of ``torch.save``-d checkpoints: no ``torch.load``, no code from the file, tensors on demand.

A checkpoint from elsewhere (CLMR's Lightning file, LAION's CLAP file, the
official Jukebox files) is a pickle, and unpickling runs whatever the file
names. :class:`TorchCheckpoint` unpickles it with a restricted unpickler that
builds only plain containers (dicts, lists, numbers, strings, a few numpy
scalars) and :class:`TensorRef` placeholders; every other class the file
names (Lightning's callbacks, ``argparse.Namespace``, Jukebox's
``Hyperparams``, ``os.system``) becomes an inert dict that runs nothing.
Tensors are read afterwards, one storage at a time, only when asked for
(:meth:`TorchCheckpoint.read`), so a 10 GB file whose first blocks are wanted
never needs 10 GB of RAM.

Both formats of ``torch.save`` are read:

* legacy (torch < 1.6, the official Jukebox files): five pickles (magic
  number, protocol version, system info, the object, the storage keys), then
  each storage as an int64 element count and its raw little-endian bytes;
* zip (torch >= 1.6): ``<archive>/data.pkl`` and one ``<archive>/data/<key>``
  record per storage.

Any malformed file (truncated, random bytes, a corrupt length) raises one
:class:`~jukemir.errors.UserError` line naming it: ``<path>: not a readable
torch checkpoint (...)``.

Why not ``torch.load(weights_only=True)``
(https://pytorch.org/docs/stable/notes/serialization.html#weights-only): it
refuses the foreign classes these files pickle unless their packages are
installed and allow-listed, and it materialises every tensor at once
(docs/design.md).
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import os
import pickle
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .errors import NotFoundError, UserError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# What a restricted unpickler over arbitrary bytes can raise (MemoryError: a corrupt length field
# asking for more bytes than exist).
_MALFORMED = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    struct.error,
    zipfile.BadZipFile,
    OverflowError,
    MemoryError,
    RecursionError,
)


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """Where a tensor's elements lie: ``storage`` key, dtype, element offset, shape and stride."""

    storage: str
    dtype: torch.dtype
    offset: int
    shape: tuple
    stride: tuple

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: torch.dtype
    numel: int
    offset: int = 0  # elements, for a view into another storage


class _Opaque(dict):
    """Stands in for any class the unpickler does not know; calling or restoring it runs nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.__dict__["state"] = state


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return TensorRef(storage.key, storage.dtype, storage.offset + storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


_multiarray = getattr(np, "_core", None) or np.core  # numpy >= 2 renamed numpy.core
_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("_codecs", "encode"): codecs.encode,  # how protocol 2 spells bytes (numpy scalars)
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _multiarray.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.multiarray.scalar,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray.multiarray._reconstruct,
}


class _Unpickler(pickle.Unpickler):
    """Unpickles into TensorRefs and plain containers; never imports foreign code."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        # storage classes (torch.cuda.* in files saved from GPUs) become their dtypes
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        return type(name, (_Opaque,), {"__module__": f"opaque.{module}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype, key, _location, numel = pid[1:5]
        key = key.decode() if isinstance(key, bytes) else str(key)
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unsupported storage type {dtype!r}")
        root = self.storages.setdefault(key, _StorageRef(key, dtype, int(numel)))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            _view_key, view_offset, _view_numel = view
            return dataclasses.replace(root, offset=int(view_offset))
        return root


def plain(obj):
    """Opaque objects and numpy scalars -> plain Python (dicts, lists, numbers, strings)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


class TorchCheckpoint:
    """A ``torch.save``-d file: its object with :class:`TensorRef` leaves (``obj``), tensors read on demand.

    Attributes:
        path: the file.
        format: ``"legacy"`` (torch < 1.6) or ``"zip"``.
        obj: the unpickled object; tensors are :class:`TensorRef`, unknown classes inert dicts.
        bytes_read: storage bytes read so far (what was not asked for is skipped).

    Use as a context manager, or :meth:`close` it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"{self.path}: no such checkpoint")
        self.bytes_read = 0
        self._cached: tuple[str, torch.Tensor] | None = None
        self._file = open(self.path, "rb")  # noqa: SIM115 - held until close(): storages are read on demand
        try:
            if zipfile.is_zipfile(self.path):
                self.format = "zip"
                self.obj, self._storages = self._index_zip()
            else:
                self.format = "legacy"
                self.obj, self._storages = self._index_legacy()
        except _MALFORMED as exc:
            self._file.close()
            raise UserError(
                f"{self.path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})"
            ) from None

    def _index_legacy(self):
        f = self._file
        if _Unpickler(f).load() != _LEGACY_MAGIC:
            raise ValueError("bad magic number")
        if _Unpickler(f).load() != _LEGACY_PROTOCOL:
            raise ValueError("unsupported legacy protocol version")
        sys_info = _Unpickler(f).load()
        if not sys_info.get("little_endian", True):
            raise ValueError("big-endian checkpoints are not supported")
        unpickler = _Unpickler(f)
        obj = unpickler.load()
        keys = _Unpickler(f).load()
        position = f.tell()
        storages = {}
        for key in keys:
            ref = unpickler.storages[str(key)]
            storages[ref.key] = (ref, position + 8)  # after the int64 element count
            position += 8 + ref.numel * element_size(ref.dtype)
        size = self.path.stat().st_size
        if position != size:
            raise ValueError(f"the storages end at byte {position} but the file has {size} (truncated?)")
        return obj, storages

    def _index_zip(self):
        self._zip = zipfile.ZipFile(self._file)
        pkl = next((n for n in self._zip.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError("zip archive without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _Unpickler(self._zip.open(pkl))
        obj = unpickler.load()
        storages = {ref.key: (ref, f"{prefix}data/{ref.key}") for ref in unpickler.storages.values()}
        return obj, storages

    def _read_storage(self, key: str) -> torch.Tensor:
        ref, where = self._storages[key]
        nbytes = ref.numel * element_size(ref.dtype)
        if self.format == "legacy":
            self._file.seek(where - 8)
            (count,) = struct.unpack("<q", self._file.read(8))
            if count != ref.numel:
                raise UserError(
                    f"{self.path}: storage {key} holds {count} elements, the index says {ref.numel}"
                )
            data = bytearray(nbytes)
            if self._file.readinto(data) != nbytes:
                raise UserError(f"{self.path}: truncated in storage {key}")
        else:
            data = bytearray(self._zip.read(where))
            if len(data) != nbytes:
                raise UserError(f"{self.path}: storage {key} has {len(data)} bytes, expected {nbytes}")
        self.bytes_read += nbytes
        if nbytes == 0:
            return torch.empty(0, dtype=ref.dtype)
        return torch.frombuffer(data, dtype=ref.dtype)

    def position(self, ref: TensorRef):
        """A sort key: where ``ref``'s bytes lie in the file (sorting by it reads the file in one pass)."""
        _, where = self._storages[ref.storage]
        return (where, ref.offset)

    def read(self, ref: TensorRef) -> torch.Tensor:
        """The tensor ``ref``, contiguous, in its stored dtype (the last storage read is kept)."""
        if ref.storage not in self._storages:
            raise UserError(f"{self.path}: a tensor refers to storage {ref.storage}, which the file lacks")
        if self._cached is None or self._cached[0] != ref.storage:
            self._cached = None
            self._cached = (ref.storage, self._read_storage(ref.storage))
        storage = self._cached[1]
        end = (
            ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride)) + 1
            if ref.numel
            else ref.offset
        )
        if end > storage.numel():
            raise UserError(f"{self.path}: a tensor of storage {ref.storage} reaches past its end")
        return torch.as_strided(storage, ref.shape, ref.stride, ref.offset).clone()

    def load(self, refs: dict[str, TensorRef]) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` for ``{name: TensorRef}``, read in one forward pass over the file."""
        names: Iterable[str] = sorted(refs, key=lambda n: self.position(refs[n]))
        return {name: self.read(refs[name]) for name in names}

    def close(self) -> None:
        self._cached = None
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tensors_of(state) -> dict[str, TensorRef]:
    """The :class:`TensorRef` entries of a state dict (other entries skipped); ``{}`` if it is not a dict."""
    if not isinstance(state, dict):
        return {}
    return {str(k): v for k, v in state.items() if isinstance(v, TensorRef)}
