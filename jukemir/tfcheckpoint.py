"""Read TensorFlow 1 checkpoints (the V2 "tensor bundle") without TensorFlow.

A checkpoint with prefix ``P`` is two kinds of file:

* ``P.index``: an SSTable (LevelDB's table format) mapping each variable name to
  a ``BundleEntryProto`` (dtype, shape, shard, byte offset and size, crc32c of
  the bytes); the empty key holds a ``BundleHeaderProto`` (number of shards,
  endianness, format version);
* ``P.data-SSSSS-of-NNNNN``: the raw tensor bytes, concatenated.

The table is parsed from its 48-byte footer: the index block lists the data
blocks; each block is a run of prefix-compressed entries (``shared``,
``non_shared``, ``value_length`` varints, the key suffix, the value) followed by
its restart points. Both protobufs are decoded with the minimal varint decoder
below. Every block's and every tensor's crc32c is verified (``google-crc32c``).

    >>> entries = read_index("MTT_musicnn/")          # name -> TensorEntry
    >>> weights = load_checkpoint("MTT_musicnn/")     # name -> np.ndarray

A prefix may be a folder: ``"MTT_musicnn/"`` or ``Path("MTT_musicnn")`` both
mean the files ``MTT_musicnn/.index`` and ``MTT_musicnn/.data-00000-of-00001``
(how musicnn ships its models).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from .errors import UserError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type (1 byte) + masked crc32c (4 bytes)

# tensorflow/core/framework/types.proto: DataType -> numpy dtype
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    8: np.complex64,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    18: np.complex128,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}
DT_STRING, DT_BFLOAT16 = 7, 14


class CheckpointError(UserError):
    """A checkpoint that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable lives: a ``BundleEntryProto``.

    ``dtype`` is the TF ``DataType`` number, ``crc32c`` the masked checksum as stored.
    """

    name: str
    dtype: int
    shape: tuple
    shard_id: int
    offset: int
    size: int
    crc32c: int | None

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of the tensor (bfloat16 is widened to float32 on read)."""
        if self.dtype == DT_BFLOAT16:
            return np.dtype(np.float32)
        if self.dtype not in DTYPES:
            raise CheckpointError(f"variable {self.name}: unsupported TensorFlow dtype {self.dtype}")
        return np.dtype(DTYPES[self.dtype])


# ----------------------------------------------------------------- protobuf


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, next position)``."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint longer than 10 bytes")


def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield ``(field number, value)`` of a serialised protobuf message.

    Varints come as ints, fixed32/fixed64 as unsigned ints, length-delimited
    fields as bytes (nested messages are decoded by calling this again).
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} (field {field})")
        if pos > len(buf):
            raise CheckpointError(f"truncated protobuf field {field}")
        yield field, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_shape(buf: bytes) -> tuple:
    """``TensorShapeProto`` -> tuple of dimension sizes (``dim = 2``, each ``Dim.size = 1``)."""
    dims = []
    for field, value in proto_fields(buf):
        if field == 2:
            dims.append(next((_signed64(v) for f, v in proto_fields(value) if f == 1), 0))
        elif field == 3 and value:
            raise CheckpointError("tensor of unknown rank")
    return tuple(dims)


def parse_entry(name: str, buf: bytes) -> TensorEntry:
    """``BundleEntryProto`` (dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7)."""
    fields = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, value in proto_fields(buf):
        if field == 1:
            fields["dtype"] = value
        elif field == 2:
            fields["shape"] = parse_shape(value)
        elif field == 3:
            fields["shard_id"] = value
        elif field == 4:
            fields["offset"] = _signed64(value)
        elif field == 5:
            fields["size"] = _signed64(value)
        elif field == 6:
            fields["crc32c"] = value
        elif field == 7:
            raise CheckpointError(f"variable {name} is partitioned into slices; not supported")
    return TensorEntry(name=name, **fields)


def parse_header(buf: bytes) -> dict:
    """``BundleHeaderProto`` (num_shards 1, endianness 2, version 3) -> dict."""
    header = {"num_shards": 1, "endianness": 0, "version": {}}
    for field, value in proto_fields(buf):
        if field == 1:
            header["num_shards"] = value
        elif field == 2:
            header["endianness"] = value
        elif field == 3:
            header["version"] = {
                ("producer", "min_consumer", "bad_consumers")[f - 1]: v
                for f, v in proto_fields(value)
                if f in (1, 2, 3)
            }
    return header


# ------------------------------------------------------------------- crc32c


def crc32c(data: bytes | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``, as LevelDB and TensorFlow compute it.

    Computed by ``google-crc32c`` (Google's maintained CRC32C library, hardware
    accelerated where the CPU has the instruction:
    https://github.com/googleapis/python-crc32c).
    """
    return google_crc32c.value(data if isinstance(data, bytes) else bytes(memoryview(data)))


def unmask_crc(masked: int) -> int:
    """Undo LevelDB/TensorFlow's crc masking (``rotate_right(crc, 15) + 0xa282ead8``)."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------- table


def _index_path(prefix: str | os.PathLike) -> Path:
    return Path(_prefix_str(prefix) + ".index")


def _prefix_str(prefix: str | os.PathLike) -> str:
    text = os.fspath(prefix)
    if Path(text).is_dir() and not text.endswith(os.sep):
        text += os.sep
    return text


def _read_block(path: Path, data: bytes, offset: int, size: int) -> bytes:
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointError(f"{path}: block at {offset} (+{size}) runs past the end of the file")
    block = data[offset:end]
    kind = data[end]
    if kind != 0:
        raise CheckpointError(
            f"{path}: block at {offset} is compressed (type {kind}); only uncompressed tables are supported"
        )
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if unmask_crc(stored) != crc32c(data[offset : end + 1]):
        raise CheckpointError(f"{path}: block at {offset} fails its crc32c check (corrupt index)")
    return block


def _block_entries(path: Path, block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of one table block, checking its restart points."""
    if len(block) < 4:
        raise CheckpointError(f"{path}: block of {len(block)} bytes is too short")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise CheckpointError(f"{path}: block claims {n_restarts} restart points, more than fit")
    restarts = set(struct.unpack_from(f"<{n_restarts}I", block, limit))
    pos, key = 0, b""
    while pos < limit:
        start = pos
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_length, pos = _varint(block, pos)
        if start in restarts and shared:
            raise CheckpointError(f"{path}: entry at restart point {start} shares a key prefix")
        if shared > len(key) or pos + non_shared + value_length > limit:
            raise CheckpointError(f"{path}: malformed block entry at byte {start}")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length
        restarts.discard(start)
    if restarts:
        raise CheckpointError(f"{path}: restart points {sorted(restarts)[:3]} are not entry boundaries")


def read_table(path: str | os.PathLike) -> dict[bytes, bytes]:
    """Every ``key -> value`` of an uncompressed LevelDB-format SSTable, in key order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) < FOOTER_SIZE:
        raise CheckpointError(f"{path}: {len(data)} bytes, too short for a table footer")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
        raise CheckpointError(f"{path}: not a TensorFlow checkpoint index (bad table magic)")
    pos = 0
    handles = []
    for _ in range(2):  # metaindex handle, then index handle
        offset, pos = _varint(footer, pos)
        size, pos = _varint(footer, pos)
        handles.append((offset, size))
    index_block = _read_block(path, data, *handles[1])
    table = {}
    for _, handle in _block_entries(path, index_block):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        for key, value in _block_entries(path, _read_block(path, data, offset, size)):
            table[key] = value
    return table


# --------------------------------------------------------------- checkpoint


def read_index(prefix: str | os.PathLike) -> tuple[dict, dict[str, TensorEntry]]:
    """Parse ``<prefix>.index``: return ``(header, {variable name: TensorEntry})``."""
    path = _index_path(prefix)
    table = read_table(path)
    if b"" not in table:
        raise CheckpointError(f"{path}: no bundle header (empty key); not a V2 checkpoint index")
    header = parse_header(table.pop(b""))
    if header["endianness"] not in (0, 1):
        raise CheckpointError(f"{path}: unknown endianness {header['endianness']}")
    entries = {}
    for key, value in table.items():
        name = key.decode("utf-8")
        try:
            entries[name] = parse_entry(name, value)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    return header, entries


def data_path(prefix: str | os.PathLike, shard_id: int, num_shards: int) -> Path:
    """The data file of shard ``shard_id``: ``<prefix>.data-00000-of-00001`` style."""
    return Path(f"{_prefix_str(prefix)}.data-{shard_id:05d}-of-{num_shards:05d}")


def load_checkpoint(
    prefix: str | os.PathLike, names: Iterable[str] | None = None, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read variables of the checkpoint ``prefix`` as numpy arrays in TF layout (``name -> array``).

    Args:
        prefix: the checkpoint prefix (or its folder, see the module docstring).
        names: the variables to read (default: all). A name that is not in the
            index raises :class:`CheckpointError`.
        verify: check each tensor's bytes against its stored crc32c.
    """
    header, entries = read_index(prefix)
    names = list(entries) if names is None else list(names)
    missing = [n for n in names if n not in entries]
    if missing:
        raise CheckpointError(f"{_index_path(prefix)}: no variable(s) {', '.join(missing[:5])}")
    byte_order = "<" if header["endianness"] == 0 else ">"
    out = {}
    with contextlib.ExitStack() as stack:
        handles = {}
        for name in names:
            entry = entries[name]
            if entry.dtype == DT_STRING:
                raise CheckpointError(f"variable {name}: string tensors are not supported")
            if entry.shard_id >= header["num_shards"]:
                raise CheckpointError(f"variable {name}: shard {entry.shard_id} of {header['num_shards']}")
            if entry.shard_id not in handles:
                path = data_path(prefix, entry.shard_id, header["num_shards"])
                try:
                    handles[entry.shard_id] = (path, stack.enter_context(open(path, "rb")))
                except OSError as exc:
                    raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
            path, handle = handles[entry.shard_id]
            handle.seek(entry.offset)
            raw = handle.read(entry.size)
            if len(raw) != entry.size:
                end = entry.offset + entry.size
                raise CheckpointError(
                    f"{path}: variable {name} needs bytes {entry.offset}..{end}, file is shorter"
                )
            if verify and entry.crc32c is not None and crc32c(raw) != unmask_crc(entry.crc32c):
                raise CheckpointError(f"{path}: variable {name} fails its crc32c check (corrupt data)")
            out[name] = _decode(entry, raw, byte_order)
    return out


def _decode(entry: TensorEntry, raw: bytes, byte_order: str) -> np.ndarray:
    n = int(np.prod(entry.shape, dtype=np.int64))
    if entry.dtype == DT_BFLOAT16:
        bits = np.frombuffer(raw, dtype=np.dtype(np.uint16).newbyteorder(byte_order), count=n)
        array = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        dtype = entry.numpy_dtype.newbyteorder(byte_order)
        if n * dtype.itemsize != len(raw):
            raise CheckpointError(
                f"variable {entry.name}: {len(raw)} bytes for shape {entry.shape} of {dtype}"
            )
        array = np.frombuffer(raw, dtype=dtype, count=n).astype(dtype.newbyteorder("="))
    return array.reshape(entry.shape)
