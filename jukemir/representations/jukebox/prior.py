"""The top-level prior: label/time conditioning, token and position embeddings, the transformer.

Conditioning, as the original jukemir computed it (docs/fidelity/jukebox.md) from
the label vector ``[total_length, offset, window_length, artist, genre_1..5]``:

* ``y_cond`` (the start token): artist embedding + the sum of the genre
  embeddings (slots of -1 are masked out);
* ``x_cond`` (one vector per position): total-length bin + absolute-position
  bins + relative-position bins, the positions interpolated linearly from
  ``offset`` to ``offset + window_length`` over the ``n_ctx`` tokens. The binning
  replays the original's float32 arithmetic (on CUDA the original divided by
  the range as a multiplication by its reciprocal; for the 5B model's label
  the bins are identical either way).

The input of the transformer is the token embedding shifted right by one with
``y_cond`` at position 0, plus the learned position embedding, plus ``x_cond``.

Parameter names are the official ones: ``y_emb.artist_emb.emb.weight``,
``y_emb.absolute_pos_emb.emb.weight``, ``prior.x_emb.weight``,
``prior.pos_emb.pos_emb``, ``prior.transformer._attn_mods.<d>...``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UserError
from .hps import ATTENTION_ORDERS, PriorHps
from .transformer import Transformer

# What jukemir conditions on (docs/fidelity/jukebox.md): a 62 s song (the model wants >= 60 s),
# "unknown" artist and genre (id 0 in the v2 label tables), the window at offset 0.
TOTAL_LENGTH_SECONDS = 62
UNKNOWN_ARTIST, UNKNOWN_GENRE = 0, 0


class SimpleEmbedding(nn.Module):
    """A lookup table named ``emb`` (the official layout)."""

    def __init__(self, bins: int, width: int):
        super().__init__()
        self.emb = nn.Embedding(bins, width)

    def forward(self, ids):
        return self.emb(ids)


class RangeEmbedding(nn.Module):
    """Embeds positions in ``[pos_min, pos_max)`` by their bin among ``bins`` equal bins.

    With ``n_time > 1`` the positions are interpolated from ``pos_start`` to
    ``pos_end`` over ``n_time`` steps (``pos_end`` excluded), as the original.
    """

    def __init__(
        self, n_time: int, bins: int, pos_range: tuple[float, float], width: int, clamp: bool = False
    ):
        super().__init__()
        self.n_time, self.bins, self.clamp = n_time, bins, clamp
        self.pos_min, self.pos_max = pos_range
        self.emb = nn.Embedding(bins, width)

    def bin_ids(self, pos_start: torch.Tensor, pos_end: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1) float32 start [and end] -> (N, n_time) int64 bins, in the original's float32 op order."""
        if not ((self.pos_min <= pos_start).all() and (pos_start < self.pos_max).all()):
            raise ValueError(f"position {pos_start.tolist()} outside [{self.pos_min}, {self.pos_max})")
        if self.n_time == 1:
            position = pos_start
        else:
            if self.clamp:
                pos_end = pos_end.clamp(self.pos_min, self.pos_max)
            interpolation = (
                torch.arange(0, self.n_time, dtype=torch.float32).view(1, self.n_time) / self.n_time
            )
            position = pos_start + (pos_end - pos_start) * interpolation
        normalised = (position - self.pos_min) / (self.pos_max - self.pos_min)
        return (self.bins * normalised).floor().long()

    def forward(self, pos_start, pos_end=None):
        return self.emb(self.bin_ids(pos_start, pos_end).to(self.emb.weight.device))


class LabelConditioner(nn.Module):
    """Artist/genre start embedding and the time signal; official name ``y_emb``."""

    def __init__(self, hps: PriorHps):
        super().__init__()
        genre_bins, artist_bins = hps.y_bins
        width, sr = hps.prior_width, hps.sr
        self.max_bow_genre_size = hps.max_bow_genre_size
        self.bow_genre_emb = SimpleEmbedding(genre_bins, width)
        self.artist_emb = SimpleEmbedding(artist_bins, width)
        self.total_length_emb = RangeEmbedding(
            1, hps.t_bins, (hps.min_duration * sr, hps.max_duration * sr), width
        )
        self.absolute_pos_emb = RangeEmbedding(hps.n_ctx, hps.t_bins, (0.0, hps.max_duration * sr), width)
        self.relative_pos_emb = RangeEmbedding(hps.n_ctx, hps.t_bins, (0.0, 1.0), width, clamp=True)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y`` (N, 4 + max_bow_genre_size) int64 -> start (N, 1, width), time signal
        (N, n_ctx, width), float32."""
        device = self.artist_emb.emb.weight.device
        artist, genre = y[:, 3:4].to(device), y[:, 4:].to(device)
        mask = (genre >= 0).float().unsqueeze(2)
        genre_emb = (self.bow_genre_emb(genre.clamp(0)) * mask).sum(dim=1, keepdim=True)
        start_emb = genre_emb + self.artist_emb(artist)
        offset, length = y[:, 1:2], y[:, 2:3]
        total_length, start, end = y[:, 0:1].float(), offset.float(), (offset + length).float()
        time_signal = (
            self.total_length_emb(total_length)
            + self.absolute_pos_emb(start, end)
            + self.relative_pos_emb(start / total_length, end / total_length)
        )
        return start_emb, time_signal


class PositionEmbedding(nn.Module):
    """The learned (n_ctx, width) position embedding; official name ``pos_emb.pos_emb``."""

    def __init__(self, n_ctx: int, width: int):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.empty(n_ctx, width))


class ConditionalAutoregressive(nn.Module):
    """Token embedding + position embedding + transformer; official name ``prior``."""

    def __init__(self, hps: PriorHps, l_bins: int, depth: int):
        super().__init__()
        kind = ATTENTION_ORDERS[hps.attn_order]
        self.x_emb = nn.Embedding(l_bins, hps.prior_width)
        self.pos_emb = PositionEmbedding(hps.n_ctx, hps.prior_width)
        self.transformer = Transformer(
            hps.prior_width,
            depth,
            hps.heads,
            hps.attn_state,
            hps.mlp_state,
            [kind(d) for d in range(depth)],
            hps.block_ctx,
        )


class TopPrior(nn.Module):
    """The top-level prior truncated to its first ``depth`` blocks (extraction only: no output head)."""

    def __init__(self, hps: PriorHps, l_bins: int, hop_length: int, depth: int):
        super().__init__()
        if not 1 <= depth <= hps.prior_depth:
            raise UserError(f"depth {depth} outside 1..{hps.prior_depth} (prior_depth)")
        self.hps, self.hop_length, self.depth = hps, hop_length, depth
        self.y_emb = LabelConditioner(hps)
        self.prior = ConditionalAutoregressive(hps, l_bins, depth)

    def label(self) -> torch.Tensor:
        """jukemir's label vector (1, 4 + max_bow_genre_size) int64 (docs/fidelity/jukebox.md)."""
        total_length = (int(TOTAL_LENGTH_SECONDS * self.hps.sr) // self.hop_length) * self.hop_length
        window = self.hps.n_ctx * self.hop_length
        genres = [UNKNOWN_GENRE] + [-1] * (self.hps.max_bow_genre_size - 1)
        return torch.tensor([[total_length, 0, window, UNKNOWN_ARTIST, *genres]], dtype=torch.long)

    def conditioning(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_cond (1, n_ctx, width), y_cond (1, 1, width))`` float32, on the parameters' device."""
        y_cond, x_cond = self.y_emb(self.label())
        return x_cond, y_cond

    def embed(self, tokens: torch.Tensor, x_cond: torch.Tensor, y_cond: torch.Tensor) -> torch.Tensor:
        """(B, T) codes, T <= n_ctx -> (B, T, width) float32 transformer input (shift right, start token,
        positions)."""
        b, t = tokens.shape
        x = self.prior.x_emb(tokens)
        x = torch.cat([y_cond.expand(b, 1, -1).to(x.dtype), x[:, :-1]], dim=1)
        return x + self.prior.pos_emb.pos_emb[:t] + x_cond[:, :t]

    def forward(self, tokens, x_cond, y_cond, compute_dtype: torch.dtype, keep):
        """Yields ``(d, residual stream after block d)`` (B, T, width) float32 for each 1-based d in ``keep``.

        T must be a multiple of ``block_ctx``; the attention is causal, so the
        first positions never see later (e.g. padding) tokens.
        """
        return self.prior.transformer(self.embed(tokens, x_cond, y_cond), compute_dtype, keep)

    def flops_per_token(self, depth: int | None = None) -> int:
        """Matmul FLOPs (2 x multiply-adds) per token for ``depth`` blocks at full context (attention
        included)."""
        hps, depth = self.hps, depth or self.depth
        w, sa, sm = hps.prior_width, hps.attn_state, hps.mlp_state
        params = w * 3 * sa + sa * w + 2 * w * sm
        kind = ATTENTION_ORDERS[hps.attn_order]
        keys = {0: (hps.n_ctx + 1) / 2, 1: (hps.block_ctx + 1) / 2, 2: (hps.blocks + 1) / 2, 3: hps.block_ctx}
        attention = sum(4 * sa * keys[kind(d)] for d in range(depth))
        return int(2 * params * depth + attention)
