"""Jukebox weights: download, stream-convert to a compact safetensors file, load into a meta-built model.

Sources
    The official files (``vqvae.pth.tar``, ``prior_level_2.pth.tar`` of the 5B
    model) are fetched by :func:`jukemir.assets.retrieve` (resume, retries,
    mirrors: the official Azure blob, the Google Storage mirror jukemirlib
    names, then the retired CDN address) into ``<cache>/models/jukebox/5b/``.
    No published checksum exists, so they are trusted on first use: after the
    first download passes a size check (the prior's 10,288,727,721 bytes agree
    with the arithmetic below) and a structural one (the pickle parses and the
    storages end exactly at the end of the file), its sha256 is recorded in
    ``sha256.json`` beside it, and every later retrieval is verified against it.

Conversion (once per source file and depth)
    The checkpoints are torch 1.4 pickles in the legacy (non-zip) format: five
    pickles (magic, version, system info, the object, the storage keys), then
    each storage as an int64 element count and its raw bytes. :class:`CheckpointIndex`
    unpickles the object with a restricted unpickler that builds no tensors
    and runs no foreign code (tensors become references to storages, the
    ``hps`` a plain dict), computes where each storage's bytes lie, and reads
    only the storages that are kept. The zip format of torch >= 1.6 is read
    the same way. :func:`convert` filters the keys (:func:`prior_key_filter`,
    :func:`vqvae_key_filter`: only the blocks >= depth, the output head, the
    decoders and the other VQ-VAE levels are dropped, and what is left must be
    exactly what the model expects) and streams the rest, tensor by tensor, in
    their stored dtypes, into a safetensors file written atomically.

Host RAM for the real 5B prior (72 blocks, width 4,800, attention state 1,200)
    per block: Conv1D weights (4800x3600 + 1200x4800 + 2 x 4800x4800) fp16
    = 69,120,000 x 2 B = 138.24 MB; biases and LayerNorms fp32 = 37,200 x 4 B =
    0.15 MB. Embeddings fp32: tokens 2048x4800 (39.3 MB), positions 8192x4800
    (157.3 MB), output head 2048x4800 (39.3 MB), labels (120 + 4111 + 3x128)x4800
    (88.6 MB). Total 72 x 138.39 MB + 324.5 MB = 10,288,531,200 B, i.e. the
    10,288,727,721-byte file less 0.2 MB of pickle.

    * the original ``torch.load``-ed all of it (10.3 GB) and then built the model
      (another 5 GB at depth 36): its README asks for >= 30 GB;
    * conversion here holds the index (< 1 MB) and one storage at a time plus its
      contiguous copy: at most 2 x 157.3 MB (the position embedding) -> < 0.5 GB
      above the interpreter, whatever the depth;
    * the compact 36-block file is 36 x 138.39 MB + 285.2 MB = 5.27 GB; loading
      memory-maps it and copies one tensor at a time to the device, so host RAM
      stays < 1 GB for a GPU; on a CPU the model itself lives in RAM (5.27 GB, or
      10.2 GB with float32 copies of the weights).

    Peak host RAM is therefore < 12 GB in every case; :func:`prior_bytes`
    computes these figures for any config.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from ... import cache
from ...assets import Asset, retrieve_trusted
from ...errors import NotFoundError, UserError
from ...io import atomic_write
from ..base import check_keys

OFFICIAL_URLS = (
    "https://openaipublic.blob.core.windows.net/jukebox/models/5b/{name}",
    "https://storage.googleapis.com/jukebox-weights/{name}",
    "https://openaipublic.azureedge.net/jukebox/models/5b/{name}",
)
PRIOR_5B_SIZE = 10_288_727_721
FORMAT_VERSION = "1"


def official_assets(model: str = "5b") -> dict[str, Asset]:
    """``{"vqvae": Asset, "prior": Asset}`` of the official files (no published checksums)."""
    if model != "5b":
        raise UserError(f"no official jukebox weights are known for model {model!r}")
    out = {}
    for kind, name, size in (("vqvae", "vqvae.pth.tar", None), ("prior", "prior_level_2.pth.tar", PRIOR_5B_SIZE)):
        urls = tuple(u.format(name=name) for u in OFFICIAL_URLS)
        out[kind] = Asset(f"JUKEBOX_5B_{kind.upper()}", f"models/jukebox/5b/{name}", urls, None, size)
    return out


def official_dir(model: str = "5b") -> Path:
    """``<cache>/models/jukebox/<model>``: the official files, their trust record and compact forms."""
    return cache.models_dir("jukebox") / model


def retrieve_official(model: str = "5b", mirror: str | None = None) -> dict[str, Path]:
    """Download (or find) the official checkpoints; verify them against the trust-on-first-use record.

    Returns ``{"vqvae": path, "prior": path}``. Raises :class:`jukemir.assets.DownloadError`
    (``ChecksumError`` when a file differs from its recorded sha256), or ``ValueError``
    when a first download has the wrong size or is not a well-formed checkpoint
    (it is then moved aside as ``.bad``).
    """
    record_path = official_dir(model) / "sha256.json"
    paths = {}
    for kind, asset in official_assets(model).items():
        path = retrieve_trusted(asset, record_path, mirror=mirror, check=lambda p: CheckpointIndex(p).close())
        paths[kind] = path
    return paths


# ---------------------------------------------------------------- reading checkpoints without torch.load

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
    """Stands in for any class the restricted unpickler does not know (e.g. the ``Hyperparams`` of the hps)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state


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


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's object into TensorRefs and plain containers; never imports foreign code."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:  # the official files hold torch.cuda.*
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


def _plain(obj):
    """Opaque objects and numpy scalars -> plain Python (dicts, lists, numbers, strings)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class CheckpointIndex:
    """The tensors of a ``torch.save``-d checkpoint, read lazily: ``index.tensor(name)``.

    Attributes:
        path: the file.
        format: ``"legacy"`` (torch < 1.6, the official Jukebox files) or ``"zip"``.
        tensors: name -> :class:`TensorRef` of ``checkpoint["model"]`` (a leading
            ``module.`` is removed, as the original's ``restore_model`` did).
        hps: ``checkpoint["hps"]`` as a plain dict (``{}`` when absent).
        bytes_read: storage bytes read so far (what was not needed is skipped).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"{self.path}: no such checkpoint")
        self.bytes_read = 0
        self._file = open(self.path, "rb")
        try:
            if zipfile.is_zipfile(self.path):
                self.format = "zip"
                obj, storages = self._index_zip()
            else:
                self.format = "legacy"
                obj, storages = self._index_legacy()
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                struct.error, zipfile.BadZipFile, OverflowError, MemoryError, RecursionError) as exc:
            # a restricted unpickler over arbitrary bytes can fail in any of these ways (MemoryError: a
            # corrupt length field asking for more bytes than exist)
            self._file.close()
            raise UserError(f"{self.path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
        self._storages = storages
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            self._file.close()
            raise UserError(f"{self.path}: expected a dict with a 'model' state dict (the official checkpoint layout)")
        self.tensors = {}
        for name, ref in obj["model"].items():
            if not isinstance(ref, TensorRef):
                continue
            self.tensors[name.removeprefix("module.")] = ref
        hps = obj.get("hps")
        self.hps = _plain(hps) if isinstance(hps, dict) else {}
        self._cached: tuple[str, torch.Tensor] | None = None

    def _index_legacy(self):
        f = self._file
        if _IndexUnpickler(f).load() != _LEGACY_MAGIC:
            raise ValueError("bad magic number")
        if _IndexUnpickler(f).load() != _LEGACY_PROTOCOL:
            raise ValueError("unsupported legacy protocol version")
        sys_info = _IndexUnpickler(f).load()
        if not sys_info.get("little_endian", True):
            raise ValueError("big-endian checkpoints are not supported")
        unpickler = _IndexUnpickler(f)
        obj = unpickler.load()
        keys = _IndexUnpickler(f).load()
        position = f.tell()
        storages = {}
        for key in keys:
            ref = unpickler.storages[str(key)]
            storages[ref.key] = (ref, position + 8)  # after the int64 element count
            position += 8 + ref.numel * _element_size(ref.dtype)
        if position != self.path.stat().st_size:
            raise ValueError(f"the storages end at byte {position} but the file has {self.path.stat().st_size} (truncated?)")
        return obj, storages

    def _index_zip(self):
        self._zip = zipfile.ZipFile(self._file)
        pkl = next((n for n in self._zip.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError("zip archive without data.pkl")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _IndexUnpickler(self._zip.open(pkl))
        obj = unpickler.load()
        storages = {ref.key: (ref, f"{prefix}data/{ref.key}") for ref in unpickler.storages.values()}
        return obj, storages

    def _read_storage(self, key: str) -> torch.Tensor:
        ref, where = self._storages[key]
        nbytes = ref.numel * _element_size(ref.dtype)
        if self.format == "legacy":
            self._file.seek(where - 8)
            (count,) = struct.unpack("<q", self._file.read(8))
            if count != ref.numel:
                raise UserError(f"{self.path}: storage {key} holds {count} elements, the index says {ref.numel}")
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

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` sorted by where their bytes lie in the file (one forward pass over it)."""
        position = {key: (where if self.format == "legacy" else key) for key, (_, where) in self._storages.items()}
        return sorted(names, key=lambda n: (position[self.tensors[n].storage], self.tensors[n].offset))

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name``, contiguous, in its stored dtype (the last storage read is kept)."""
        ref = self.tensors[name]
        if self._cached is None or self._cached[0] != ref.storage:
            self._cached = None
            self._cached = (ref.storage, self._read_storage(ref.storage))
        storage = self._cached[1]
        end = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride)) + 1 if ref.numel else ref.offset
        if end > storage.numel():
            raise UserError(f"{self.path}: tensor {name} reaches past its storage")
        return torch.as_strided(storage, ref.shape, ref.stride, ref.offset).clone()

    def close(self) -> None:
        self._cached = None
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------- key filters

_BLOCK = re.compile(r"prior\.transformer\._attn_mods\.(\d+)\.")
_VQVAE_LEVEL = re.compile(r"(encoders|bottleneck\.level_blocks)\.(\d+)\.")


def prior_key_filter(depth: int) -> Callable[[str], bool]:
    """True for the prior keys to drop: blocks ``>= depth`` and the output head ``prior.x_out``."""

    def drop(name: str) -> bool:
        block = _BLOCK.match(name)
        return bool(block and int(block.group(1)) >= depth) or name.startswith("prior.x_out.")

    return drop


def vqvae_key_filter(top_level: int) -> Callable[[str], bool]:
    """True for the VQ-VAE keys to drop: the decoders, and the encoders and codebooks of other levels."""

    def drop(name: str) -> bool:
        level = _VQVAE_LEVEL.match(name)
        return name.startswith("decoders.") or bool(level and int(level.group(2)) != top_level)

    return drop


# ---------------------------------------------------------------- compact files

_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclasses.dataclass
class ConversionReport:
    """What :func:`convert` kept and dropped, and how many bytes it read."""

    kept: int
    dropped: list
    bytes_read: int
    source_bytes: int


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    drop: Callable[[str], bool],
    expected: dict[str, tuple],
    metadata: dict[str, str],
) -> ConversionReport:
    """Stream the tensors of checkpoint ``src`` that ``drop`` keeps into safetensors file ``dst``.

    ``expected`` (name -> shape) is what the model needs; anything else left
    after the filter, or anything missing, is an error before ``dst`` is
    written. Tensors keep their stored dtypes. ``metadata`` (str -> str) goes
    into the file header together with the checkpoint's ``hps`` (JSON).
    """
    with CheckpointIndex(src) as index:
        dropped = sorted(n for n in index.tensors if drop(n))
        kept = index.order(n for n in index.tensors if not drop(n))
        check_keys({n: index.tensors[n].shape for n in kept}, expected, str(src))
        header: dict = {}
        offset = 0
        for name in kept:
            ref = index.tensors[name]
            nbytes = ref.numel * _element_size(ref.dtype)
            header[name] = {"dtype": _ST_DTYPES[ref.dtype], "shape": list(ref.shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        meta = dict(metadata, hps=json.dumps(index.hps, sort_keys=True, default=str), format=FORMAT_VERSION)
        header_bytes = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
        header_bytes += b" " * (-len(header_bytes) % 8)
        with atomic_write(dst, "wb") as out:
            out.write(struct.pack("<Q", len(header_bytes)))
            out.write(header_bytes)
            for name in kept:
                out.write(index.tensor(name).reshape(-1).view(torch.uint8).numpy())
        return ConversionReport(len(kept), dropped, index.bytes_read, index.path.stat().st_size)


def compact_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The header metadata of a compact file (``hps`` is JSON)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def load_compact(path: str | os.PathLike, expected: dict[str, tuple], device: torch.device, cast) -> dict[str, torch.Tensor]:
    """Read a compact file's tensors onto ``device``, one at a time (memory-mapped), as ``cast(name, tensor)``.

    The file must hold at least ``expected``'s names (extra blocks of a deeper
    conversion are skipped), with the expected shapes.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        deeper = {k: s for k, s in shapes.items() if k in expected}
        check_keys(deeper, expected, str(path))
        return {k: cast(k, f.get_tensor(k).to(device)) for k in expected}


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """Hold an exclusive advisory lock on ``lock_path``: one process downloads and converts at a time."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def source_fingerprint(path: str | os.PathLike) -> str:
    """Identifies a user-supplied checkpoint without hashing it: sha1 of (real path, size, mtime)."""
    st = Path(path).stat()
    return hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def find_compact(folder: Path, stem: str, depth: int | None) -> Path | None:
    """The shallowest compact file ``<stem>.blocks<N>.safetensors`` with N >= depth (or ``<stem>.safetensors``)."""
    if depth is None:
        path = folder / f"{stem}.safetensors"
        return path if path.is_file() else None
    found = []
    for path in folder.glob(f"{stem}.blocks*.safetensors"):
        match = re.fullmatch(rf"{re.escape(stem)}\.blocks(\d+)\.safetensors", path.name)
        if match and int(match.group(1)) >= depth:
            found.append((int(match.group(1)), path))
    return min(found)[1] if found else None


def prior_bytes(width: int, depth: int, n_ctx: int, l_bins: int, y_bins=(120, 4111), t_bins: int = 128,
                m_attn: float = 0.25, m_mlp: float = 1.0, output_head: bool = True) -> dict[str, int]:
    """Bytes of a prior checkpoint with fp16 Conv1D weights: ``{"conv_fp16", "small_fp32", "embeddings", "total"}``."""
    sa, sm = int(m_attn * width), int(m_mlp * width)
    conv = depth * (width * 3 * sa + sa * width + 2 * width * sm) * 2
    small = depth * (3 * sa + width + sm + width + 4 * width) * 4
    embeddings = (l_bins * width * (2 if output_head else 1) + n_ctx * width + (sum(y_bins) + 3 * t_bins) * width) * 4
    return {"conv_fp16": conv, "small_fp32": small, "embeddings": embeddings, "total": conv + small + embeddings}


def random_state(expected: dict[str, tuple], device: torch.device, cast, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for ``expected`` (name -> shape), scaled by role, as ``cast(name, tensor)``.

    For benchmarks and tests: Conv1D/conv weights ~ N(0, 1/fan_in), biases and
    embeddings small, LayerNorm gains near 1, codebook ~ N(0, 1).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, shape in expected.items():
        noise = torch.randn(shape, generator=gen, device=device)
        if name.endswith(".k"):
            value = noise
        elif re.search(r"\.ln_\d\.weight$", name):
            value = 1 + 0.1 * noise
        elif name.endswith(".w") or (name.endswith(".weight") and len(shape) == 3):
            fan_in = shape[0] if name.endswith(".w") else shape[1] * shape[2]
            value = noise / fan_in**0.5
        else:
            value = 0.05 * noise
        out[name] = cast(name, value)
    return out
