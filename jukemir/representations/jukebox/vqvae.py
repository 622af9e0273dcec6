"""The encoder path of the VQ-VAE's top level and its codebook: audio -> discrete codes.

Only what extraction needs is built: the top level's encoder (for the 5B
VQ-VAE: three blocks downsampling by 2**3, 2**2, 2**2, i.e. hop 128) and that
level's codebook of 2,048 vectors of 64. Parameter names are the official ones
(``encoders.2.level_blocks.0.model.0.0.weight``, ``bottleneck.level_blocks.2.k``,
...), so the official ``vqvae.pth.tar`` loads once the other levels and the
decoders are filtered out.

Everything here runs in float32: the codes are an argmin over distances, and
rounding could flip near-ties.
"""

from __future__ import annotations

import torch
from torch import nn

from .hps import VQVAEHps


class ResConv1DBlock(nn.Module):
    """``x + Conv1d_k1(ReLU(Conv1d_k3_dilated(ReLU(x))))``; shape-preserving, (N, width, T)."""

    def __init__(self, width: int, state: int, dilation: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(width, state, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(state, width, 1),
        )

    def forward(self, x):
        return x + self.model(x)


class Resnet1D(nn.Module):
    """``depth`` residual units with dilations ``growth**0, growth**1, ...`` (1, 3, 9, 27 for the 5B
    VQ-VAE)."""

    def __init__(self, width: int, depth: int, m_conv: float, growth: int, cycle: int | None):
        super().__init__()
        dilations = [growth ** (d if cycle is None else d % cycle) for d in range(depth)]
        self.model = nn.Sequential(*[ResConv1DBlock(width, int(m_conv * width), dil) for dil in dilations])

    def forward(self, x):
        return self.model(x)


class EncoderConvBlock(nn.Module):
    """``down_t`` x [Conv1d(kernel 2s, stride s, padding s/2) -> Resnet1D], then Conv1d(k3) to ``emb_width``.

    (N, in_width, T) -> (N, emb_width, T // s**down_t) for even strides.
    """

    def __init__(
        self, in_width: int, emb_width: int, down_t: int, stride_t: int, width: int, depth: int, hps: VQVAEHps
    ):
        super().__init__()
        steps = [
            nn.Sequential(
                nn.Conv1d(in_width if i == 0 else width, width, 2 * stride_t, stride_t, stride_t // 2),
                Resnet1D(width, depth, hps.m_conv, hps.dilation_growth_rate, hps.dilation_cycle),
            )
            for i in range(down_t)
        ]
        self.model = nn.Sequential(*steps, nn.Conv1d(width, emb_width, 3, 1, 1))

    def forward(self, x):
        return self.model(x)


class Encoder(nn.Module):
    """The encoder of VQ-VAE level ``level``: ``level + 1`` blocks, mono audio
    (N, 1, T) -> (N, emb_width, tokens)."""

    def __init__(self, hps: VQVAEHps, level: int):
        super().__init__()
        width, depth = hps.level_width_depth(level)
        self.level_blocks = nn.ModuleList(
            EncoderConvBlock(
                1 if i == 0 else hps.emb_width,
                hps.emb_width,
                hps.downs_t[i],
                hps.strides_t[i],
                width,
                depth,
                hps,
            )
            for i in range(level + 1)
        )

    def forward(self, x):
        for block in self.level_blocks:
            x = block(x)
        return x


class Codebook(nn.Module):
    """Nearest-codebook quantisation; ``k`` is (l_bins, emb_width) (the official BottleneckBlock's buffer)."""

    def __init__(self, l_bins: int, emb_width: int):
        super().__init__()
        self.register_buffer("k", torch.empty(l_bins, emb_width))

    def forward(self, x):
        """(N, emb_width, T) float32 -> (N, T) int64 codes: argmin of ``|x|^2 - 2 x.k + |k|^2``."""
        n, width, t = x.shape
        x = x.permute(0, 2, 1).reshape(n * t, width)
        k_t = self.k.t()
        distance = (x**2).sum(-1, keepdim=True) - 2 * (x @ k_t) + (k_t**2).sum(0, keepdim=True)
        return distance.argmin(-1).view(n, t)


class Bottleneck(nn.Module):
    """Holds the top level's codebook under its official name ``bottleneck.level_blocks.<level>``."""

    def __init__(self, hps: VQVAEHps):
        super().__init__()
        self.level_blocks = nn.ModuleDict({str(hps.top_level): Codebook(hps.l_bins, hps.emb_width)})


class TopLevelEncoder(nn.Module):
    """Mono audio -> top-level VQ-VAE codes.

    ``encoders`` holds only the top level (a ModuleDict keyed by the level
    number, so the names match the official ModuleList's).
    """

    def __init__(self, hps: VQVAEHps):
        super().__init__()
        self.hps = hps
        self.encoders = nn.ModuleDict({str(hps.top_level): Encoder(hps, hps.top_level)})
        self.bottleneck = Bottleneck(hps)

    def n_tokens(self, n_samples: int) -> int:
        """How many codes ``n_samples`` of audio give (each downsampling conv floors)."""
        for down_t, s in zip(self.hps.downs_t, self.hps.strides_t):
            for _ in range(down_t):
                n_samples = (n_samples + 2 * (s // 2) - 2 * s) // s + 1 if n_samples >= s else 0
        return max(n_samples, 0)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, samples) float32 audio at ``hps.sr`` Hz -> (N, n_tokens(samples)) int64 codes."""
        top = str(self.hps.top_level)
        z = self.encoders[top](audio.unsqueeze(1).float())
        return self.bottleneck.level_blocks[top](z)

    def flops(self, n_samples: int) -> int:
        """Multiply-adds x 2 of one clip of ``n_samples`` (convolutions and codebook distances)."""
        total, length = 0, n_samples
        for conv in self.modules():
            if isinstance(conv, nn.Conv1d):
                k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
                length_out = (length + 2 * p - d * (k - 1) - 1) // s + 1
                total += 2 * conv.in_channels * conv.out_channels * k * length_out
                length = length_out
        return total + 2 * length * self.hps.emb_width * self.hps.l_bins
