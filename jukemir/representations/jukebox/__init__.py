"""Jukebox: 4,800-d features from the middle of the 5B Jukebox top prior (docs/fidelity/jukebox.md).

Per clip:

1. audio at 44.1 kHz, mono, peak-normalised over the whole file, first 25 s
   (:meth:`Jukebox.load`);
2. VQ-VAE top-level codes (hop 128, 2,048 codes), the first ``n_ctx`` = 8,192;
3. the top prior truncated after the deepest requested block, conditioned as
   the original (62 s total length, "unknown" artist and genre, time signal);
4. the residual stream after each block in ``layers`` (1-based; default 36);
5. its mean over the positions (``pool="mean"``) or every position (``"none"``).

Output of one clip, float32: one layer -> ``(4800,)`` (mean) or ``(T, 4800)``
(none); several layers -> stacked in the order given, ``(n_layers, 4800)`` or
``(n_layers, T, 4800)``. T is 8,192, or the number of tokens there are with
``allow_short``.

Precision: ``"fp32"`` is the original's arithmetic (Conv1D weights rounded to
float16 as stored, float32 activations); the paper's features were made so.
``"tf32"`` is the same with the prior's matrix products in TF32 on CUDA (10-bit
mantissa inputs, float32 accumulation; the VQ-VAE stays float32 so the codes do
not move; on a CPU it equals ``"fp32"``). ``"bf16"`` (default) and ``"fp16"``
run the projections and attention in that dtype with float32 residual stream,
LayerNorm, softmax (inside the fused attention), embeddings and pooling.

Speed switches, off by default (the outputs' provenance records them when on):
``fuse_mlp`` (bf16/fp16 only) folds quick_gelu's constant into the MLP weights
so its activation is one ``silu`` kernel (see :meth:`.transformer.MLP.fold`);
``torch_compile`` compiles each transformer block with ``torch.compile``
(fusing the LayerNorms, casts and elementwise work; meant for CUDA, where it
pays; the first batch of each shape compiles).

Short audio (< 8,192 x 128 samples, about 23.78 s) is an error by default;
``allow_short=True`` embeds the tokens there are, as jukemirlib does (the
attention is causal, so this equals the first positions of a full forward).

Weights: see :mod:`.weights` (download, trust on first use, one-time
conversion to a compact memory-mapped file holding only the blocks used).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...device import torch_device
from ...errors import NotFoundError, UserError
from ...weights import convert_once, converted_dir, fingerprint
from ..base import Representation, layered_output_shape
from . import weights as W
from .hps import PriorHps, VQVAEHps, hps_dict, resolve_hps
from .prior import TopPrior
from .vqvae import TopLevelEncoder

CROP_SECONDS = 25
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}
POOLS = ("mean", "none")
STEMS = {"vqvae": "vqvae", "prior": "prior_level_2"}  # official files: <stem>.pth.tar
_IDENTITY = ("source", "source_size", "source_sha256", "source_fingerprint")


class Jukebox(Representation):
    """The paper's Jukebox representation. Build once (loads weights), then ``rep(audio)`` or
    ``rep.batch(audios)``.

    Args:
        device: torch device; default ``cuda`` when available, else ``cpu``.
        precision: ``"bf16"``, ``"fp16"``, ``"fp32"`` (the original's arithmetic) or ``"tf32"``.
        layers: 1-based block outputs to return, e.g. ``[12, 24, 36]``.
        pool: ``"mean"`` over positions, or ``"none"`` to keep the time axis.
        allow_short: embed clips with fewer than ``n_ctx`` tokens instead of failing.
        model: ``"5b"`` (the official config), or ``"checkpoint"`` to take the
            hyper-parameters stored in the checkpoints.
        weights: ``None`` (download the official files), a folder holding
            ``vqvae.pth.tar`` and ``prior_level_2.pth.tar`` (official format), a
            dict ``{"vqvae": path, "prior": path}``, or ``"random"`` (benchmarks).
        hps: overrides by official hyper-parameter name (``prior_width``, ``n_ctx``, ...).
        batch_size: clips per forward pass (default 4 on CUDA, 1 on CPU).
        mirror: base URL or folder tried first for the official files.
        seed: seed of ``weights="random"``.
        fuse_mlp: bf16/fp16 only: one ``silu`` kernel for quick_gelu (weights rescaled once at load).
        torch_compile: compile each transformer block with ``torch.compile`` (for CUDA).
    """

    name = "jukebox"
    version = "1"
    sample_rate = 44100
    normalize = True
    resampler = "kaiser_best"
    dim = 4800

    def __init__(
        self,
        device: str | None = None,
        precision: str = "bf16",
        layers: Sequence[int] = (36,),
        pool: str = "mean",
        allow_short: bool = False,
        model: str = "5b",
        weights: str | os.PathLike | dict | None = None,
        hps: dict | None = None,
        batch_size: int | None = None,
        mirror: str | None = None,
        seed: int = 0,
        fuse_mlp: bool = False,
        torch_compile: bool = False,
    ):
        if precision not in PRECISIONS:
            raise UserError(f"jukebox precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if pool not in POOLS:
            raise UserError(f"jukebox pool must be one of {', '.join(POOLS)}, got {pool!r}")
        layers = [int(x) for x in ([layers] if isinstance(layers, (int, np.integer)) else layers)]
        if not layers or len(set(layers)) != len(layers) or min(layers) < 1:
            raise UserError(f"jukebox layers must be distinct block numbers >= 1, got {layers}")
        if batch_size is not None and int(batch_size) < 1:
            raise UserError(f"jukebox batch_size must be >= 1, got {batch_size}")
        if fuse_mlp and PRECISIONS[precision] == torch.float32:
            raise UserError(f"jukebox fuse_mlp rounds rescaled weights: bf16/fp16 only, not {precision}")
        self.device = torch_device(device)
        self.precision, self.layers, self.pool, self.allow_short = precision, layers, pool, bool(allow_short)
        self.model_name, self.hps_overrides = model, dict(hps or {})
        self.batch_size = int(batch_size or (4 if self.device.type == "cuda" else 1))
        self.preferred_batch = self.batch_size

        self.vqvae, self.prior, self.weights_id = load_models(
            model, self.hps_overrides, weights, max(layers), self.device, PRECISIONS[precision], mirror, seed
        )
        vq_hps, prior_hps = self.vqvae.hps, self.prior.hps
        self.sample_rate = vq_hps.sr
        self.dim = prior_hps.prior_width
        self.crop_samples = CROP_SECONDS * self.sample_rate
        self.min_samples = prior_hps.n_ctx * vq_hps.hop_length
        self.fuse_mlp, self.torch_compile = bool(fuse_mlp), bool(torch_compile)
        blocks = self.prior.prior.transformer._attn_mods
        if self.fuse_mlp:
            for block in blocks:
                block.mlp.fold()
        if self.torch_compile:
            for block in blocks:  # blocks of one attention kind share a compiled graph
                block.compile()
        with torch.inference_mode():
            self._x_cond, self._y_cond = self.prior.conditioning()

    # ------------------------------------------------------------ contract
    @property
    def output_shape(self) -> tuple:
        return layered_output_shape(self.dim, self.layers, self.pool)

    def options(self) -> dict:
        return {
            "precision": self.precision,
            "layers": self.layers,
            "pool": self.pool,
            "allow_short": self.allow_short,
            "model": self.model_name,
            "hps": {"vqvae": hps_dict(self.vqvae.hps), "prior": hps_dict(self.prior.hps)},
            "weights": self.weights_id,
            # speed switches that change the numbers: recorded when on (default outputs keep their identity)
            **({"fuse_mlp": True} if self.fuse_mlp else {}),
            **({"torch_compile": True} if self.torch_compile else {}),
        }

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode at 44.1 kHz, mono, peak-normalised over the whole file, then keep the first 25 s."""
        return super().load(path)[: self.crop_samples]

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at :attr:`sample_rate` Hz (see the module docstring for the output shape)."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed several clips, ``batch_size`` per forward pass; each result is independent of its batch
        mates."""
        clips = [self._prepare(a) for a in audios]
        with torch.inference_mode():
            tokens = self.encode(clips)
            return self._embed(tokens)

    # ------------------------------------------------------------ steps
    def _prepare(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
        audio = audio[: self.crop_samples]
        if not np.isfinite(audio).all():
            raise UserError("audio contains non-finite samples")
        n_tokens = min(self.vqvae.n_tokens(len(audio)), self.prior.hps.n_ctx)
        seconds = len(audio) / self.sample_rate
        if n_tokens == 0:
            raise UserError(f"audio too short: {len(audio)} samples ({seconds:.3f} s) give no VQ-VAE token")
        if n_tokens < self.prior.hps.n_ctx and not self.allow_short:
            need = self.min_samples
            raise UserError(
                f"audio too short: {len(audio)} samples ({seconds:.2f} s) give {n_tokens} of the "
                f"{self.prior.hps.n_ctx} tokens jukebox needs "
                f"({need} samples, {need / self.sample_rate:.2f} s at "
                f"{self.sample_rate} Hz); pass --allow-short (allow_short=True) to embed the tokens there are"
            )
        return audio

    def encode(self, clips: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Clips (1-D float32, at most 25 s) -> their first ``n_ctx`` VQ-VAE codes, int64 on the device.

        Clips of equal length are encoded together (padding would change the
        codes near the end), ``batch_size`` at a time, in float32 without TF32.
        """
        n_ctx = self.prior.hps.n_ctx
        out: list[torch.Tensor | None] = [None] * len(clips)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(i)
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=False):
            for idx in by_length.values():
                for start in range(0, len(idx), self.batch_size):
                    chunk = idx[start : start + self.batch_size]
                    audio = torch.from_numpy(np.stack([clips[i] for i in chunk]))
                    if self.device.type == "cuda":
                        audio = audio.pin_memory()
                    codes = self.vqvae(audio.to(self.device, non_blocking=True))[:, :n_ctx]
                    for i, row in zip(chunk, codes):
                        out[i] = row
        return out

    def _embed(self, tokens: list[torch.Tensor]) -> list[np.ndarray]:
        """Codes -> pooled (or full) residual streams, ``batch_size`` clips per forward pass."""
        block_ctx = self.prior.hps.block_ctx
        compute = PRECISIONS[self.precision]
        results = []
        for start in range(0, len(tokens), self.batch_size):
            chunk = tokens[start : start + self.batch_size]
            lengths = [len(t) for t in chunk]
            padded = (
                -(-max(lengths) // block_ctx) * block_ctx
            )  # causal attention: padding never reaches earlier positions
            z = torch.zeros(len(chunk), padded, dtype=torch.long, device=self.device)
            for i, t in enumerate(chunk):
                z[i, : len(t)] = t
            per_clip: list[dict[int, np.ndarray]] = [{} for _ in chunk]
            with _tf32_matmuls(self.precision == "tf32"):
                for d, h in self.prior(z, self._x_cond, self._y_cond, compute, set(self.layers)):
                    for i, n in enumerate(lengths):
                        acts = h[i, :n] if self.pool == "none" else h[i, :n].mean(dim=0)
                        per_clip[i][d] = acts.float().cpu().numpy()
            for layer_acts in per_clip:
                stacked = [layer_acts[d] for d in self.layers]
                results.append(stacked[0] if len(stacked) == 1 else np.stack(stacked))
        return results

    def flops_per_clip(self, n_samples: int | None = None) -> int:
        """FLOPs of one full clip: VQ-VAE encoder on ``n_samples`` (default 25 s) + the truncated prior."""
        n_samples = n_samples or self.crop_samples
        return self.vqvae.flops(n_samples) + self.prior.flops_per_token() * self.prior.hps.n_ctx


@contextlib.contextmanager
def _tf32_matmuls(enabled: bool):
    """CUDA float32 matrix products in TF32 while the block runs (the setting is process-wide)."""
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def load_models(
    model: str,
    overrides: dict,
    weights,
    depth: int,
    device: torch.device,
    compute_dtype: torch.dtype,
    mirror: str | None = None,
    seed: int = 0,
) -> tuple[TopLevelEncoder, TopPrior, dict]:
    """Build the VQ-VAE top-level encoder and the prior truncated to ``depth`` blocks, with weights, on
    ``device``.

    Models are built on the meta device and the tensors are assigned from the
    compact files (converted first if needed) or drawn at random. Returns
    ``(vqvae, prior, weights_id)``; ``weights_id`` identifies the weights in provenance.
    """
    sources = _weight_sources(weights)
    if sources is None:
        vq_hps, prior_hps = resolve_hps(model, overrides)
        _check_depth(prior_hps, depth)
        vqvae, prior = _meta_models(vq_hps, prior_hps, depth)
        cast = _caster(prior_hps, compute_dtype)
        vq_state = W.random_state(_shapes(vqvae), device, lambda n, t: t.float(), seed)
        prior_state = W.random_state(_shapes(prior), device, cast, seed + 1)
        weights_id = {"random": seed}
    else:
        compact, weights_id = _compact_files(sources, depth, model, overrides, mirror)
        vq_ckpt_hps = _stored_hps(compact["vqvae"]) if model == "checkpoint" else None
        prior_ckpt_hps = _stored_hps(compact["prior"]) if model == "checkpoint" else None
        vq_hps, prior_hps = resolve_hps(model, overrides, vq_ckpt_hps, prior_ckpt_hps)
        _check_depth(prior_hps, depth)
        vqvae, prior = _meta_models(vq_hps, prior_hps, depth)
        cast = _caster(prior_hps, compute_dtype)
        vq_state = W.load_compact(compact["vqvae"], _shapes(vqvae), device, lambda n, t: t.float())
        prior_state = W.load_compact(compact["prior"], _shapes(prior), device, cast)
    vqvae.load_state_dict(vq_state, strict=True, assign=True)
    prior.load_state_dict(prior_state, strict=True, assign=True)
    for module in (vqvae, prior):
        module.eval().requires_grad_(False)
    return vqvae, prior, weights_id


def _stored_hps(compact: Path) -> dict:
    """The checkpoint hps kept in a compact file's header."""
    return json.loads(W.compact_metadata(compact).get("hps", "{}"))


def _check_depth(prior_hps: PriorHps, depth: int) -> None:
    if depth > prior_hps.prior_depth:
        raise UserError(f"jukebox layers up to {depth} exceed the prior's {prior_hps.prior_depth} blocks")


def _meta_models(vq_hps: VQVAEHps, prior_hps: PriorHps, depth: int) -> tuple[TopLevelEncoder, TopPrior]:
    with torch.device("meta"):
        return TopLevelEncoder(vq_hps), TopPrior(prior_hps, vq_hps.l_bins, vq_hps.hop_length, depth)


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _caster(prior_hps: PriorHps, compute_dtype: torch.dtype):
    """Per-tensor dtype rule of the prior: Conv1D ``w``/``b`` (rounded to fp16 first when the model stores
    fp16 weights, as the original) in the compute dtype (``w`` stays fp16 for fp32 compute); the rest fp32."""

    def cast(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name.endswith(".w"):
            if prior_hps.fp16_params:
                tensor = tensor.half()
            return tensor if compute_dtype == torch.float32 else tensor.to(compute_dtype)
        if name.endswith(".b"):
            return tensor.to(compute_dtype)
        return tensor.float()

    return cast


def _weight_sources(weights) -> dict[str, Path | None] | None:
    """``{"vqvae", "prior"}`` -> source checkpoint (None: the official download); None for random weights."""
    if isinstance(weights, str) and weights == "random":
        return None
    if weights is None:
        return {"vqvae": None, "prior": None}
    if isinstance(weights, dict):
        unknown = set(weights) - {"vqvae", "prior"}
        if unknown or len(weights) != 2:
            raise UserError(
                f"jukebox weights dict needs exactly the keys 'vqvae' and 'prior', got {sorted(weights)}"
            )
        paths = {k: Path(v) for k, v in weights.items()}
    else:
        folder = Path(weights)
        paths = {kind: folder / f"{stem}.pth.tar" for kind, stem in STEMS.items()}
        if not folder.is_dir():
            raise NotFoundError(
                f"{folder}: jukebox weights must be a folder holding "
                f"{' and '.join(p.name for p in paths.values())}"
            )
    for path in paths.values():
        if not path.is_file():
            raise NotFoundError(f"{path}: jukebox checkpoint not found")
    return paths


def _compact_files(
    sources: dict, depth: int, model: str, overrides: dict, mirror: str | None
) -> tuple[dict, dict]:
    """The compact files of ``sources`` (converted first where missing) and the weights' identity.

    Each source's compact files live in the folder of its identity
    (:func:`jukemir.weights.converted_dir`): the recorded sha256 of an official
    file (known without the file once it was downloaded), or the fingerprint
    of a user's file. A prior converted to more blocks than ``depth`` serves.
    """
    official = W.official("5b")
    assets = dict(zip(W.KINDS, official.assets))
    user = {k: v for k, v in sources.items() if v is not None}

    def identity(kind: str) -> str | None:
        return fingerprint(user[kind]) if kind in user else official.sha256(assets[kind])

    def find(kind: str) -> Path | None:
        ident = identity(kind)  # None: an official file not downloaded yet
        folder = converted_dir("jukebox", ident) if ident else None
        return folder and W.find_compact(folder, STEMS[kind], depth if kind == "prior" else None)

    compact = {kind: find(kind) for kind in W.KINDS}
    paths = dict(user)
    if any(compact[k] is None and k not in user for k in W.KINDS):  # an official file is needed
        paths.update({k: p for k, p in W.retrieve_official("5b", mirror).items() if k not in user})
        compact = {kind: find(kind) for kind in W.KINDS}  # identified now: it may have been converted before
    if any(path is None for path in compact.values()):
        _convert_missing(paths, compact, set(user), identity, model, overrides, depth)
    ident = {}
    for kind, path in compact.items():
        meta = W.compact_metadata(path)
        ident[kind] = {k: meta.get(k) for k in _IDENTITY}
    return compact, ident


def _convert_missing(paths, compact, user, identity, model, overrides, depth) -> None:
    """Convert the checkpoints ``paths`` that have no compact file yet (filling ``compact``)."""
    indices = {k: W.CheckpointIndex(paths[k]) for k in W.KINDS if compact[k] is None}
    try:
        stored = {k: (indices[k].hps if k in indices else _stored_hps(compact[k])) for k in W.KINDS}
        vq_hps, prior_hps = resolve_hps(model, overrides, stored["vqvae"], stored["prior"])
        _check_depth(prior_hps, depth)
        vqvae, prior = _meta_models(vq_hps, prior_hps, depth)
    finally:
        for index in indices.values():
            index.close()
    plans = {
        "vqvae": (vqvae, W.vqvae_key_filter(vq_hps.top_level), f"{STEMS['vqvae']}.safetensors"),
        "prior": (prior, W.prior_key_filter(depth), f"{STEMS['prior']}.blocks{depth}.safetensors"),
    }
    for kind in indices:
        module, drop, name = plans[kind]
        src, ident = paths[kind], identity(kind)
        meta = {"source": src.name, "source_size": str(src.stat().st_size), "kind": kind}
        meta["source_fingerprint" if kind in user else "source_sha256"] = ident
        if kind == "prior":
            meta["blocks"] = str(depth)

        expected = _shapes(module)

        def convert(dst, src=src, drop=drop, expected=expected, meta=meta):
            W.convert(src, dst, drop, expected, meta)

        what = f"{src} ({src.stat().st_size / 1e9:.2f} GB)"
        compact[kind] = convert_once(converted_dir("jukebox", ident) / name, convert, what)


__all__ = ["CROP_SECONDS", "Jukebox", "load_models"]
