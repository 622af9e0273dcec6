"""clap-music: the audio branch of LAION-CLAP's music checkpoint (HTS-AT base + projection), 512-d.

LAION's ``music_audioset_epoch_15_esc_90.14.pt`` is a CLAP model whose audio
encoder is HTS-AT "base" (a Swin Transformer over a log-mel spectrogram) and
whose text encoder is RoBERTa; only the audio branch is used here, written
from the official implementation (the ``laion_clap`` package: ``htsat.py``,
``model.py``, ``hook.py``) and tested against it on the same weights.

Per clip (mono, 48 kHz, resampy ``kaiser_best``, not normalised, as CLAP's
``librosa.load(sr=48000)``):

1. cut into consecutive 10 s windows (480,000 samples, CLAP's ``clip_samples``);
   a last window shorter than 5 s is dropped when there are others;
2. each window as ``CLAP_Module.get_audio_embedding_from_data`` prepares it:
   rounded to 16-bit (clipped to [-1, 1], x 32767, truncated, / 32767), and a
   window shorter than 10 s repeated ``floor(480000 / n)`` times then
   zero-padded to 10 s ("repeatpad");
3. HTS-AT: power STFT (1,024-point Hann, hop 480, centred, reflect padding, as
   torchlibrosa's convolution), 64-band mel (the checkpoint's filter bank,
   50-14,000 Hz), 10 log10(max(x, 1e-10)), BatchNorm over bands, the 1,001 x 64
   log-mel stretched (bicubic, aligned corners) to 1,024 x 64 and folded into a
   256 x 256 image, 4 x 4 patches, four Swin stages (depths 2, 2, 12, 2, windows
   of 8, shifted every other block), LayerNorm, mean over the tokens -> 1,024;
4. the audio projection (Linear 1,024 -> 512, ReLU, Linear 512 -> 512), then
   L2 normalisation (CLAP's joint embedding);
5. the mean of the windows' embeddings -> ``(512,)`` float32.

(The official ``get_audio_embedding_from_data`` takes one *random* 10 s crop
of longer audio; step 1 makes the feature deterministic and covers the clip.)

The architecture's sizes are read from the checkpoint's tensors (so smaller
test checkpoints in the same format load too); the signal settings are those
of LAION's ``HTSAT-base.json``.

Weights: the release file from LAION's Hugging Face repository, declared as a
:class:`jukemir.weights.Official` (no checksum is published: its sha256 is
recorded on first use in ``<cache>/models/clap/sha256.json`` and checked on
every later retrieval), read without ``torch.load`` (:mod:`jukemir.checkpoints`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..assets import Asset, file_checksum
from ..checkpoints import TorchCheckpoint, tensors_of
from ..device import torch_device
from ..errors import NotFoundError, UserError
from ..weights import Official, check_keys
from .base import Representation

CHECKPOINT = "music_audioset_epoch_15_esc_90.14.pt"
URL = f"https://huggingface.co/lukewys/laion_clap/resolve/main/{CHECKPOINT}"
SAMPLE_RATE = 48_000
CLIP_SAMPLES = 480_000
MIN_LAST_WINDOW = CLIP_SAMPLES // 2


@dataclass(frozen=True)
class HTSATConfig:
    """HTS-AT's sizes (base: embed 128, depths 2-2-12-2, heads 4-8-16-32) and CLAP's signal settings."""

    embed_dim: int = 128
    depths: tuple = (2, 2, 12, 2)
    heads: tuple = (4, 8, 16, 32)
    window: int = 8
    patch: int = 4
    spec_size: int = 256
    mel_bins: int = 64
    n_fft: int = 1024
    hop: int = 480
    joint_dim: int = 512

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins


# ---------------------------------------------------------------- Swin Transformer pieces


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * H/w * W/w, w * w, C)``, windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def window_reverse(windows: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, w * w, C)`` -> ``(B, H, W, C)``."""
    C = windows.shape[-1]
    x = windows.view(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned bias per relative position and head."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2), >= 0
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias_table[self.index].permute(2, 0, 1)[None]
        if mask is not None:  # (nW, N, N): 0 inside a region, -100 across regions of a shifted window
            attn = (attn.view(B // len(mask), len(mask), self.heads, N, N) + mask[None, :, None]).view(
                B, self.heads, N, N
            )
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention, then an MLP, each with a residual."""

    def __init__(self, dim: int, resolution: int, heads: int, window: int, shift: int):
        super().__init__()
        if resolution <= window:  # one window covers the map: no partition, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, window, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim)
        self.register_buffer("mask", self._mask() if shift else None, persistent=False)

    def _mask(self) -> torch.Tensor:
        """-100 between positions of a shifted window that come from different regions of the map."""
        R, w, s = self.resolution, self.window, self.shift
        regions = torch.zeros(1, R, R, 1)
        bounds = (slice(0, -w), slice(-w, -s), slice(-s, None))
        for i, (h, v) in enumerate((h, v) for h in bounds for v in bounds):
            regions[:, h, v, :] = i
        ids = window_partition(regions, w).squeeze(-1)  # (nW, w*w)
        return (ids[:, None, :] != ids[:, :, None]).float() * -100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        R, w, s = self.resolution, self.window, self.shift
        h = self.norm1(x).view(B, R, R, C)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        h = window_reverse(self.attn(window_partition(h, w), self.mask), w, R, R)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + h.reshape(B, L, C)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens -> one token of twice the width."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, C = x.shape
        x = x.view(B, self.resolution, self.resolution, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class Stage(nn.Module):
    def __init__(self, dim: int, resolution: int, depth: int, heads: int, window: int, merge: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2) for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class _Conv(nn.Module):
    def __init__(self, channels: int, n_fft: int, hop: int):
        super().__init__()
        self.conv_real = nn.Conv1d(1, channels, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, channels, n_fft, stride=hop, bias=False)


class HTSAT(nn.Module):
    """HTS-AT's audio encoder up to its pooled embedding: waveforms ``(B, 480000)`` at 48 kHz ->
    ``(B, num_features)``.

    Parameter names follow ``laion_clap``'s ``HTSAT_Swin_Transformer`` (the STFT
    kernels and mel filter bank are checkpoint tensors there too).
    """

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        self.cfg = cfg
        bins = cfg.n_fft // 2 + 1
        self.spectrogram_extractor = nn.Module()
        self.spectrogram_extractor.stft = _Conv(bins, cfg.n_fft, cfg.hop)
        self.logmel_extractor = nn.Module()
        self.logmel_extractor.melW = nn.Parameter(torch.zeros(bins, cfg.mel_bins))
        self.bn0 = nn.BatchNorm2d(cfg.mel_bins)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=cfg.patch)
        self.patch_embed.norm = nn.LayerNorm(cfg.embed_dim)
        resolution = cfg.spec_size // cfg.patch
        self.layers = nn.ModuleList(
            Stage(cfg.embed_dim * 2**i, resolution // 2**i, depth, heads, cfg.window, i < len(cfg.depths) - 1)
            for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads))
        )
        self.norm = nn.LayerNorm(cfg.num_features)

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` -> ``(B, 1, frames, mel_bins)`` log-mel power in dB (torchlibrosa's computation)."""
        x = F.pad(waveform[:, None, :], (self.cfg.n_fft // 2, self.cfg.n_fft // 2), mode="reflect")
        stft = self.spectrogram_extractor.stft
        power = stft.conv_real(x) ** 2 + stft.conv_imag(x) ** 2  # (B, bins, frames)
        mel = power.transpose(1, 2)[:, None] @ self.logmel_extractor.melW
        return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))  # ref 1.0, no top_db

    def image(self, logmel: torch.Tensor) -> torch.Tensor:
        """BatchNorm over bands, then the spectrogram stretched to ``freq_ratio * spec_size`` frames and
        folded into a ``spec_size`` x ``spec_size`` image: ``(B, 1, frames, bands)`` -> ``(B, 1, S, S)``."""
        cfg = self.cfg
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)
        frames, bands = cfg.spec_size * cfg.freq_ratio, cfg.spec_size // cfg.freq_ratio
        if x.shape[2] > frames or x.shape[3] > bands:
            raise UserError(f"log-mel of {tuple(x.shape[2:])} exceeds the model's {frames} x {bands}")
        if x.shape[2] < frames:
            x = F.interpolate(x, (frames, x.shape[3]), mode="bicubic", align_corners=True)
        if x.shape[3] < bands:
            x = F.interpolate(x, (x.shape[2], bands), mode="bicubic", align_corners=True)
        B = x.shape[0]
        x = x.permute(0, 1, 3, 2).reshape(B, 1, bands, cfg.freq_ratio, frames // cfg.freq_ratio)
        return x.permute(0, 1, 3, 2, 4).reshape(B, 1, bands * cfg.freq_ratio, frames // cfg.freq_ratio)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(self.image(self.logmel(waveform)))
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        for stage in self.layers:
            x = stage(x)
        return self.norm(x).mean(dim=1)  # HTS-AT's 'embedding': the average over every token


class CLAPAudio(nn.Module):
    """CLAP's audio branch and projection: waveforms -> L2-normalised joint embeddings ``(B, joint_dim)``."""

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        self.audio_branch = HTSAT(cfg)
        self.audio_projection = nn.Sequential(
            nn.Linear(cfg.num_features, cfg.joint_dim), nn.ReLU(), nn.Linear(cfg.joint_dim, cfg.joint_dim)
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_projection(self.audio_branch(waveform)), dim=-1)


# ---------------------------------------------------------------- checkpoint and input


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The audio branch and projection tensors of a CLAP checkpoint (``state_dict`` of a training
    checkpoint or a bare state dict; a leading ``module.`` is removed, as ``laion_clap`` does).

    Read by :class:`jukemir.checkpoints.TorchCheckpoint` (no code from the file runs); only the
    audio tensors are read, the text branch's are skipped."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such CLAP checkpoint")
    with TorchCheckpoint(path) as checkpoint:
        obj = checkpoint.obj
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            kind = type(obj).__name__
            raise UserError(f"{path}: expected a CLAP checkpoint (a dict with a state_dict), got {kind}")
        keep = ("audio_branch.", "audio_projection.")
        refs = {k.removeprefix("module."): ref for k, ref in tensors_of(state).items()}
        refs = {k: ref for k, ref in refs.items() if k.startswith(keep)}
        if not refs:
            raise UserError(f"{path}: no audio_branch.* tensors; not a CLAP checkpoint")
        return checkpoint.load(refs)


def config_from_state(state: dict[str, torch.Tensor]) -> HTSATConfig:
    """HTS-AT's sizes read off its tensors (embedding width, blocks and heads per stage, window, bands, joint
    size)."""
    try:
        embed_dim = state["audio_branch.patch_embed.proj.weight"].shape[0]
        depths, heads, window = [], [], None
        while f"audio_branch.layers.{len(depths)}.blocks.0.norm1.weight" in state:
            i = len(depths)
            depths.append(
                sum(
                    1
                    for k in state
                    if k.startswith(f"audio_branch.layers.{i}.blocks.") and k.endswith(".norm1.weight")
                )
            )
            table = state[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"]
            heads.append(table.shape[1])
            window = window or (round(table.shape[0] ** 0.5) + 1) // 2
        return HTSATConfig(
            embed_dim=embed_dim,
            depths=tuple(depths),
            heads=tuple(heads),
            window=window,
            patch=state["audio_branch.patch_embed.proj.weight"].shape[-1],
            mel_bins=state["audio_branch.bn0.weight"].shape[0],
            n_fft=state["audio_branch.spectrogram_extractor.stft.conv_real.weight"].shape[-1],
            joint_dim=state["audio_projection.0.weight"].shape[0],
        )
    except KeyError as exc:
        raise UserError(f"CLAP checkpoint without {exc.args[0]}; not an HTS-AT audio branch") from None


def load_model(path: str | os.PathLike) -> CLAPAudio:
    """A :class:`CLAPAudio` in eval mode with the checkpoint's weights (every tensor it needs present, same
    shapes)."""
    state = read_state(path)
    model = CLAPAudio(config_from_state(state))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys({k: tuple(v.shape) for k, v in state.items() if k in expected}, expected, str(path))
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model.eval().requires_grad_(False)


def official() -> Official:
    """LAION's music checkpoint (no published checksum: trusted on first use once it reads as one)."""
    asset = Asset(
        "CLAP_MUSIC_AUDIOSET",
        f"models/clap/{CHECKPOINT}",
        (URL,),
        mirror_path=f"weights/clap-music/{CHECKPOINT}",
        hint=f"pass --weights /path/to/{CHECKPOINT}",
    )
    return Official("clap", (asset,), check=read_state)


def official_checkpoint(mirror: str | None = None) -> Path:
    """Download (or find) LAION's music checkpoint, verified against the trust-on-first-use record."""
    return official().fetch(mirror)[0]


def prepare_window(audio: np.ndarray) -> np.ndarray:
    """One window as CLAP's ``get_audio_embedding_from_data`` feeds it: 16-bit rounding, then repeat-padding
    to 480,000 samples (``floor(480000 / n)`` copies, then zeros)."""
    audio = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    audio = (audio / 32767.0).astype(np.float32)
    if len(audio) < CLIP_SAMPLES:
        audio = np.tile(audio, CLIP_SAMPLES // len(audio))
        audio = np.pad(audio, (0, CLIP_SAMPLES - len(audio)))
    return audio


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """Consecutive 10 s windows; a last one under 5 s is dropped when there are others."""
    chunks = [audio[i : i + CLIP_SAMPLES] for i in range(0, len(audio), CLIP_SAMPLES)]
    if len(chunks) > 1 and len(chunks[-1]) < MIN_LAST_WINDOW:
        chunks.pop()
    return chunks


class CLAPMusic(Representation):
    """LAION-CLAP's music checkpoint, audio branch (512-d; see the module docstring).

    Args:
        device: torch device; default ``cuda`` when available, else ``cpu``.
        weights: a CLAP checkpoint (``.pt``, LAION's format); ``None`` downloads the official one.
        mirror: base URL or folder tried first for the download.
    """

    name = "clap-music"
    version = "1"
    sample_rate = SAMPLE_RATE
    normalize = False
    resampler = "kaiser_best"
    preferred_batch = 4

    def __init__(
        self, device: str | None = None, weights: str | os.PathLike | None = None, mirror: str | None = None
    ):
        self.device = torch_device(device)
        path = official_checkpoint(mirror) if weights is None else Path(weights)
        self.model = load_model(path).to(self.device)
        self.dim = self.model.audio_projection[-1].out_features
        self.weights_id = file_checksum(path)
        self.windows_per_forward = 16 if self.device.type == "cuda" else 4

    def options(self) -> dict:
        return {"weights": self.weights_id}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at 48 kHz -> ``(512,)`` float32."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips; their windows run :attr:`windows_per_forward` at a time (each is independent of its
        mates)."""
        prepared, owner = [], []
        for i, audio in enumerate(audios):
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1 or len(audio) == 0:
                raise UserError(f"expected non-empty mono audio of shape (n,), got {audio.shape}")
            if not np.isfinite(audio).all():
                raise UserError("audio contains non-finite samples")
            for window in windows(audio):
                prepared.append(prepare_window(window))
                owner.append(i)
        embeddings = []
        with torch.inference_mode():
            for s in range(0, len(prepared), self.windows_per_forward):
                chunk = torch.from_numpy(np.stack(prepared[s : s + self.windows_per_forward])).to(self.device)
                embeddings.append(self.model(chunk).float().cpu())
        embeddings = torch.cat(embeddings).numpy()
        owner = np.asarray(owner)
        return [embeddings[owner == i].mean(axis=0).astype(np.float32) for i in range(len(audios))]


__all__ = ["HTSAT", "CLAPAudio", "CLAPMusic", "HTSATConfig", "load_model", "prepare_window", "read_state"]
