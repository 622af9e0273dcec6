"""Jukebox weights: the official files, their stream conversion to a compact safetensors file, and its
loading.

Sources
    The official files (``vqvae.pth.tar``, ``prior_level_2.pth.tar`` of the 5B
    model) are declared as a :class:`jukemir.weights.Official` (URLs in order:
    the official Azure blob, the Google Storage mirror jukemirlib names, then
    the retired CDN address) and fetched into ``<cache>/models/jukebox/5b/``.
    No published checksum exists, so they are trusted on first use: after the
    first download passes a size check (the prior's 10,288,727,721 bytes agree
    with the arithmetic below) and a structural one (the pickle parses and the
    storages end exactly at the end of the file), its sha256 is recorded in
    ``sha256.json`` beside it, and every later retrieval is verified against it.

Conversion (once per source file and depth, :func:`jukemir.weights.convert_once`)
    The checkpoints are torch 1.4 pickles in the legacy (non-zip) format, read
    by :class:`CheckpointIndex` (:mod:`jukemir.checkpoints`: a restricted
    unpickler that builds no tensors and runs no foreign code; the ``hps``
    become a plain dict) which reads only the storages that are kept. The zip
    format of torch >= 1.6 is read the same way. :func:`convert` filters the
    keys (:func:`prior_key_filter`, :func:`vqvae_key_filter`: only the blocks
    >= depth, the output head, the decoders and the other VQ-VAE levels are
    dropped, and what is left must be exactly what the model expects) and
    streams the rest, tensor by tensor, in their stored dtypes, into a
    safetensors file written atomically, in the folder of its source's
    identity (:func:`jukemir.weights.converted_dir`).

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

import dataclasses
import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ...assets import Asset
from ...checkpoints import TorchCheckpoint, element_size, plain, tensors_of
from ...errors import UserError
from ...io import atomic_write
from ...weights import Official, check_keys

OFFICIAL_URLS = (
    "https://openaipublic.blob.core.windows.net/jukebox/models/5b/{name}",
    "https://storage.googleapis.com/jukebox-weights/{name}",
    "https://openaipublic.azureedge.net/jukebox/models/5b/{name}",
)
PRIOR_5B_SIZE = 10_288_727_721
FORMAT_VERSION = "1"


def official(model: str = "5b") -> Official:
    """The official files ``vqvae.pth.tar`` and ``prior_level_2.pth.tar`` (no published checksums: trusted
    on first use after their size and a structural check pass)."""
    if model != "5b":
        raise UserError(f"no official jukebox weights are known for model {model!r}")
    assets = []
    for kind, name, size in (
        ("vqvae", "vqvae.pth.tar", None),
        ("prior", "prior_level_2.pth.tar", PRIOR_5B_SIZE),
    ):
        urls = tuple(u.format(name=name) for u in OFFICIAL_URLS)
        assets.append(
            Asset(
                f"JUKEBOX_5B_{kind.upper()}",
                f"models/jukebox/5b/{name}",
                urls,
                None,
                size,
                mirror_path=f"weights/jukebox/5b/{name}",
                hint="pass --weights FOLDER holding vqvae.pth.tar and prior_level_2.pth.tar",
            )
        )
    return Official("jukebox/5b", tuple(assets), check=lambda path: CheckpointIndex(path).close())


KINDS = ("vqvae", "prior")  # the order of official().assets


def retrieve_official(model: str = "5b", mirror: str | None = None) -> dict[str, Path]:
    """Download (or find) the official checkpoints, verified: ``{"vqvae": path, "prior": path}``.

    Raises :class:`jukemir.assets.DownloadError` (``ChecksumError`` when a file
    differs from its recorded sha256), or ``ValueError`` when a first download
    has the wrong size or is not a well-formed checkpoint (it is then moved
    aside as ``.bad``).
    """
    return dict(zip(KINDS, official(model).fetch(mirror)))


# ---------------------------------------------------------------- the official checkpoint layout


class CheckpointIndex(TorchCheckpoint):
    """An official Jukebox checkpoint (``{"hps": ..., "model": state dict}``), read lazily:
    ``index.tensor(name)``.

    Attributes (besides :class:`jukemir.checkpoints.TorchCheckpoint`'s):
        tensors: name -> :class:`TensorRef` of ``checkpoint["model"]`` (a leading
            ``module.`` is removed, as the original's ``restore_model`` did).
        hps: ``checkpoint["hps"]`` as a plain dict (``{}`` when absent).
    """

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        if not isinstance(self.obj, dict) or not isinstance(self.obj.get("model"), dict):
            self.close()
            raise UserError(
                f"{self.path}: expected a dict with a 'model' state dict (the official checkpoint layout)"
            )
        self.tensors = {
            name.removeprefix("module."): ref for name, ref in tensors_of(self.obj["model"]).items()
        }
        hps = self.obj.get("hps")
        self.hps = plain(hps) if isinstance(hps, dict) else {}

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` sorted by where their bytes lie in the file (one forward pass over it)."""
        return sorted(names, key=lambda n: self.position(self.tensors[n]))

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name``, contiguous, in its stored dtype."""
        return self.read(self.tensors[name])


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
            nbytes = ref.numel * element_size(ref.dtype)
            header[name] = {
                "dtype": _ST_DTYPES[ref.dtype],
                "shape": list(ref.shape),
                "data_offsets": [offset, offset + nbytes],
            }
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


def load_compact(
    path: str | os.PathLike, expected: dict[str, tuple], device: torch.device, cast
) -> dict[str, torch.Tensor]:
    """Read a compact file's tensors onto ``device``, one at a time (memory-mapped), as
    ``cast(name, tensor)``.

    The file must hold at least ``expected``'s names (extra blocks of a deeper
    conversion are skipped), with the expected shapes.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        deeper = {k: s for k, s in shapes.items() if k in expected}
        check_keys(deeper, expected, str(path))
        return {k: cast(k, f.get_tensor(k).to(device)) for k in expected}


def find_compact(folder: Path, stem: str, depth: int | None) -> Path | None:
    """The shallowest compact file ``<stem>.blocks<N>.safetensors`` with N >= depth (or
    ``<stem>.safetensors``)."""
    if depth is None:
        path = folder / f"{stem}.safetensors"
        return path if path.is_file() else None
    found = []
    for path in folder.glob(f"{stem}.blocks*.safetensors"):
        match = re.fullmatch(rf"{re.escape(stem)}\.blocks(\d+)\.safetensors", path.name)
        if match and int(match.group(1)) >= depth:
            found.append((int(match.group(1)), path))
    return min(found)[1] if found else None


def prior_bytes(
    width: int,
    depth: int,
    n_ctx: int,
    l_bins: int,
    y_bins=(120, 4111),
    t_bins: int = 128,
    m_attn: float = 0.25,
    m_mlp: float = 1.0,
    output_head: bool = True,
) -> dict[str, int]:
    """Bytes of a prior checkpoint with fp16 Conv1D weights:
    ``{"conv_fp16", "small_fp32", "embeddings", "total"}``."""
    sa, sm = int(m_attn * width), int(m_mlp * width)
    conv = depth * (width * 3 * sa + sa * width + 2 * width * sm) * 2
    small = depth * (3 * sa + width + sm + width + 4 * width) * 4
    embeddings = (
        l_bins * width * (2 if output_head else 1) + n_ctx * width + (sum(y_bins) + 3 * t_bins) * width
    ) * 4
    return {
        "conv_fp16": conv,
        "small_fp32": small,
        "embeddings": embeddings,
        "total": conv + small + embeddings,
    }


def random_state(
    expected: dict[str, tuple], device: torch.device, cast, seed: int = 0
) -> dict[str, torch.Tensor]:
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
