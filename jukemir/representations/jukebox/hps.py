"""Hyper-parameters of the Jukebox models, by the official names (openai/jukebox ``hparams.py``).

Two small frozen dataclasses describe what extraction needs: :class:`VQVAEHps`
(the VQ-VAE, of which only the top level's encoder and codebook are built) and
:class:`PriorHps` (the top-level prior). :func:`resolve_hps` builds them from a
named config (``"5b"``, the paper's model), from the ``hps`` dict stored in the
checkpoints, and from overrides, all by the official names::

    vqvae, prior = resolve_hps("5b", {"prior_width": 64, "prior_depth": 6, "n_ctx": 64, "blocks": 8})

Only the family the paper used is supported: a top-level prior (no upsampler
conditioning), label conditioning without lyrics, and the factorised attention
orders 0 (dense), 1 (row/column) and 2 (row/column/previous-row).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ...errors import UserError


@dataclass(frozen=True)
class VQVAEHps:
    """The VQ-VAE (official names). ``hop_length`` of the top level is ``prod(strides_t ** downs_t)``."""

    levels: int = 3
    downs_t: tuple = (3, 2, 2)
    strides_t: tuple = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    hvqvae_multipliers: tuple = (2, 1, 1)
    sr: int = 44100

    @property
    def top_level(self) -> int:
        return self.levels - 1

    @property
    def hop_length(self) -> int:
        """Audio samples per top-level token (128 for the 5B VQ-VAE)."""
        return math.prod(s**d for s, d in zip(self.strides_t, self.downs_t))

    def level_width_depth(self, level: int) -> tuple[int, int]:
        """Residual width and depth of ``level``'s encoder (scaled by ``hvqvae_multipliers``)."""
        mult = self.hvqvae_multipliers[level] if self.hvqvae_multipliers else 1
        return self.width * mult, self.depth * mult

    def validate(self) -> None:
        if not (len(self.downs_t) == len(self.strides_t) == self.levels):
            raise UserError(
                f"jukebox hps: downs_t {self.downs_t} and strides_t {self.strides_t} "
                f"need {self.levels} levels"
            )
        if self.hvqvae_multipliers and len(self.hvqvae_multipliers) != self.levels:
            raise UserError(
                f"jukebox hps: hvqvae_multipliers {self.hvqvae_multipliers} need {self.levels} entries"
            )
        if any(s % 2 for s in self.strides_t):
            raise UserError(f"jukebox hps: strides_t {self.strides_t} must be even (kernel 2s, padding s/2)")


@dataclass(frozen=True)
class PriorHps:
    """The top-level prior (official names); ``prior_depth`` is the depth of the trained model."""

    level: int = 2
    n_ctx: int = 8192
    prior_width: int = 4800
    prior_depth: int = 72
    heads: int = 8
    attn_order: int = 2
    blocks: int = 128
    m_attn: float = 0.25
    m_mlp: float = 1.0
    res_scale: bool = False
    labels: bool = True
    y_bins: tuple = (120, 4111)
    t_bins: int = 128
    max_bow_genre_size: int = 5
    min_duration: float = 60.0
    max_duration: float = 600.0
    use_tokens: bool = False
    n_tokens: int = 0
    single_enc_dec: bool = False
    merged_decoder: bool = True
    fp16_params: bool = True
    sr: int = 44100

    @property
    def block_ctx(self) -> int:
        """Tokens per row of the factorisation (64 for the 5B prior)."""
        return self.n_ctx // self.blocks

    @property
    def attn_state(self) -> int:
        """Width of the attention state, ``m_attn * prior_width`` (1,200 for the 5B prior)."""
        return int(self.m_attn * self.prior_width)

    @property
    def mlp_state(self) -> int:
        return int(self.m_mlp * self.prior_width)

    def validate(self, vqvae: VQVAEHps) -> None:
        problems = []
        if self.level != vqvae.top_level:
            problems.append(
                f"level {self.level} is not the VQ-VAE's top level {vqvae.top_level} (upsamplers unsupported)"
            )
        if self.attn_order not in ATTENTION_ORDERS:
            problems.append(
                f"attn_order {self.attn_order} unsupported (supported: {sorted(ATTENTION_ORDERS)})"
            )
        if self.blocks is None or self.n_ctx % self.blocks:
            problems.append(f"n_ctx {self.n_ctx} is not a multiple of blocks {self.blocks}")
        if self.attn_state % self.heads:
            problems.append(f"attention state {self.attn_state} is not a multiple of heads {self.heads}")
        if self.use_tokens or self.n_tokens or self.single_enc_dec:
            problems.append(
                "lyrics-conditioned priors (use_tokens / n_tokens / single_enc_dec) are unsupported"
            )
        if not self.labels:
            problems.append("priors without label conditioning (labels=False) are unsupported")
        if self.res_scale:
            problems.append("res_scale=True is unsupported")
        if len(self.y_bins) != 2:
            problems.append(f"y_bins {self.y_bins} must be (genres, artists)")
        if problems:
            raise UserError("jukebox hps: " + "; ".join(problems))


# attn_order -> attention kind of block d (0 dense, 1 row, 2 column, 3 previous row), as in the original.
ATTENTION_ORDERS = {
    0: lambda d: 0,
    1: lambda d: (1, 2)[d % 2],
    2: lambda d: (1, 2, 3)[d % 3],
}

# The official named configs. The dataclass defaults are the 5B model's values
# (openai/jukebox hparams.py: ``vqvae``, and ``prior_5b`` updated with ``labels``).
MODELS: dict[str, tuple[VQVAEHps, PriorHps]] = {"5b": (VQVAEHps(), PriorHps())}
UNSUPPORTED_MODELS = {
    "5b_lyrics": "lyrics-conditioned (the paper used the 5b model without lyrics)",
    "1b_lyrics": "lyrics-conditioned (the paper used the 5b model without lyrics)",
}

_VQVAE_NAMES = {f.name for f in fields(VQVAEHps)}
_PRIOR_NAMES = {f.name for f in fields(PriorHps)}
HPS_NAMES = sorted(_VQVAE_NAMES | _PRIOR_NAMES)


def _coerce(value, like):
    """Checkpoint hps may hold numpy scalars and lists where the dataclass has ints and tuples."""
    if isinstance(like, tuple) and value is not None:
        return tuple(_coerce(v, 0) for v in value)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _apply(base, values: Mapping, names: set):
    picked = {k: _coerce(v, getattr(base, k)) for k, v in values.items() if k in names}
    return dataclasses.replace(base, **picked)


def resolve_hps(
    model: str = "5b",
    overrides: Mapping | None = None,
    vqvae_checkpoint_hps: Mapping | None = None,
    prior_checkpoint_hps: Mapping | None = None,
) -> tuple[VQVAEHps, PriorHps]:
    """Build and validate the hyper-parameters.

    Args:
        model: a named config (``"5b"``), or ``"checkpoint"`` to start from the 5B
            values updated with the ``hps`` dicts stored in the checkpoints.
        overrides: official names -> values, applied last. A name used by both
            models (``sr``) goes to both; an unknown name is an error.
        vqvae_checkpoint_hps, prior_checkpoint_hps: the checkpoints' ``hps`` (used
            when ``model == "checkpoint"``; names this code does not use are ignored).
    Returns:
        ``(VQVAEHps, PriorHps)``.
    """
    if model in UNSUPPORTED_MODELS:
        raise UserError(f"jukebox model {model!r} is {UNSUPPORTED_MODELS[model]}")
    if model != "checkpoint" and model not in MODELS:
        raise UserError(
            f"unknown jukebox model {model!r}; expected one of {', '.join([*MODELS, 'checkpoint'])}"
        )
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(HPS_NAMES))
    if unknown:
        raise UserError(
            f"unknown jukebox hyper-parameter(s) {', '.join(unknown)}; known: {', '.join(HPS_NAMES)}"
        )
    vqvae, prior = MODELS["5b" if model == "checkpoint" else model]
    if model == "checkpoint":
        if vqvae_checkpoint_hps is None or prior_checkpoint_hps is None:
            raise UserError("jukebox model 'checkpoint' needs checkpoints that store their hps")
        vqvae = _apply(vqvae, vqvae_checkpoint_hps, _VQVAE_NAMES)
        prior = _apply(prior, prior_checkpoint_hps, _PRIOR_NAMES)
    vqvae = _apply(vqvae, overrides, _VQVAE_NAMES)
    prior = _apply(prior, overrides, _PRIOR_NAMES)
    vqvae.validate()
    prior.validate(vqvae)
    return vqvae, prior


def hps_dict(hps) -> dict:
    """A JSON-able dict of a dataclass of hyper-parameters (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hps).items()}


__all__ = ["ATTENTION_ORDERS", "HPS_NAMES", "MODELS", "PriorHps", "VQVAEHps", "hps_dict", "resolve_hps"]
