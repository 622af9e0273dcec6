"""The factorised-attention transformer of the Jukebox priors (inference only).

A sequence of ``n_ctx`` tokens is viewed as ``blocks`` rows of ``block_ctx``
tokens (128 x 64 for the 5B prior). Block ``d`` attends in one pattern, chosen
by ``attn_order`` (2 for the 5B prior: ``[row, column, previous-row][d % 3]``):

* row: causal attention within the token's row;
* column: causal attention to the same position of every earlier row;
* previous-row: full attention to the previous row (row 0 sees zero keys and
  values, so its attention output is 0);
* dense: causal attention to everything (attn_order 0).

Each pattern is a reshape followed by PyTorch's scaled-dot-product attention,
never a masked dense ``n_ctx x n_ctx`` matrix. Each block computes
``h = x + a + m`` with ``a = attn(ln_0(x))`` and ``m = mlp(ln_1(x + a))``.

Precision: the residual stream stays in float32 and LayerNorm runs in float32;
the projections and attention run in the dtype of the input they are given
(``compute_dtype``). ``Conv1D`` weights are cast to that dtype on use, so
float16-stored weights with float32 activations reproduce the original's
``fp16_params=True, fp16=False`` arithmetic exactly. A block's attention and MLP
outputs are added to the float32 stream as they are (type promotion: the same
float32 sums as casting them first, without a float32 copy of each).

:meth:`MLP.fold` (reduced precision only) moves quick_gelu's constant into the
weights, ``quick_gelu(x @ w + b) @ v == silu(x @ (1.702 w) + 1.702 b) @ (v / 1.702)``,
so the activation is one ``silu`` kernel instead of three elementwise passes
(each rounding to the compute dtype).

Parameter names follow the official checkpoints:
``_attn_mods.<d>.attn.c_attn.w``, ``.attn.c_proj.b``, ``.ln_0.weight``,
``.mlp.c_fc.w``, ``.mlp.c_proj.w``, ``.ln_1.bias``, ...
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DENSE, ROW, COLUMN, PREVIOUS_ROW = 0, 1, 2, 3


class Conv1D(nn.Module):
    """``x @ w + b`` with ``w`` of shape (n_in, n_out), the official layout; (..., n_in) -> (..., n_out)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_in, n_out))
        self.b = nn.Parameter(torch.empty(n_out))

    def forward(self, x):
        out = torch.addmm(self.b.to(x.dtype), x.reshape(-1, x.shape[-1]), self.w.to(x.dtype))
        return out.view(*x.shape[:-1], out.shape[-1])


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (eps 1e-5); returns float32."""

    def forward(self, x):
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _sdpa(q, k, v, causal: bool, scale: float):
    """SDPA on (batch, heads, length, head_dim), with head_dim zero-padded to a multiple of 8 on CUDA
    half/bfloat16 inputs so the fused kernels (float32 softmax inside) apply; padding changes nothing."""
    head_dim = q.shape[-1]
    pad = -head_dim % 8 if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) else 0
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    return out[..., :head_dim] if pad else out


class FactoredAttention(nn.Module):
    """One block's self-attention of kind ``kind``; (B, T, width) -> (B, T, width), T a multiple of
    ``block_ctx``."""

    def __init__(self, width: int, n_state: int, heads: int, kind: int, block_ctx: int):
        super().__init__()
        self.c_attn = Conv1D(width, 3 * n_state)
        self.c_proj = Conv1D(n_state, width)
        self.heads, self.kind, self.block_ctx = heads, kind, block_ctx
        self.head_dim = n_state // heads

    def forward(self, x):
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        a = {DENSE: self._dense, ROW: self._row, COLUMN: self._column, PREVIOUS_ROW: self._previous_row}[
            self.kind
        ](q, k, v)
        return self.c_proj(a)

    def _heads(self, x, n_seq, length):
        """(n_seq * length, heads * head_dim) rows in sequence order -> (n_seq, heads, length, head_dim)."""
        return x.reshape(n_seq, length, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, a, shape):
        """(n_seq, heads, length, head_dim) -> ``shape`` (..., heads * head_dim)."""
        return a.transpose(1, 2).reshape(shape)

    def _attend(self, q, k, v, n_seq, length, causal):
        scale = 1.0 / math.sqrt(self.head_dim)
        q, k, v = (self._heads(t, n_seq, length) for t in (q, k, v))
        return _sdpa(q, k, v, causal, scale)

    def _dense(self, q, k, v):
        b, t, d = q.shape
        return self._merge(self._attend(q, k, v, b, t, True), (b, t, d))

    def _row(self, q, k, v):
        b, t, d = q.shape
        rows = b * t // self.block_ctx
        return self._merge(self._attend(q, k, v, rows, self.block_ctx, True), (b, t, d))

    def _column(self, q, k, v):
        b, t, d = q.shape
        n_rows, bc = t // self.block_ctx, self.block_ctx

        def columns(x):  # (b, rows, bc, d) -> (b, bc, rows, d): each in-row position becomes a sequence
            return x.reshape(b, n_rows, bc, d).transpose(1, 2)

        a = self._attend(columns(q), columns(k), columns(v), b * bc, n_rows, True)
        return self._merge(a, (b, bc, n_rows, d)).transpose(1, 2).reshape(b, t, d)

    def _previous_row(self, q, k, v):
        b, t, d = q.shape
        n_rows, bc = t // self.block_ctx, self.block_ctx

        def previous(x):  # row r sees row r - 1; row 0 sees zeros
            x = x.reshape(b, n_rows, bc, d)
            return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)

        a = self._attend(q, previous(k), previous(v), b * n_rows, bc, False)
        return self._merge(a, (b, t, d))


class MLP(nn.Module):
    """``c_proj(quick_gelu(c_fc(x)))`` (or, folded, ``c_proj'(silu(c_fc'(x)))``: see :meth:`fold`)."""

    GELU_SCALE = 1.702

    def __init__(self, width: int, n_state: int):
        super().__init__()
        self.c_fc = Conv1D(width, n_state)
        self.c_proj = Conv1D(n_state, width)
        self.folded = False

    def forward(self, x):
        h = self.c_fc(x)
        return self.c_proj(F.silu(h) if self.folded else quick_gelu(h))

    @torch.no_grad()
    def fold(self) -> None:
        """Scale ``c_fc`` by 1.702 and ``c_proj.w`` by 1 / 1.702 (in float32, then back to each tensor's
        dtype) so that ``forward`` applies ``silu``; one more rounding of the weights (reduced precision)."""
        if self.folded:
            return
        scale = self.GELU_SCALE
        for t, factor in ((self.c_fc.w, scale), (self.c_fc.b, scale), (self.c_proj.w, 1 / scale)):
            t.copy_((t.float() * factor).to(t.dtype))
        self.folded = True


class ResAttnBlock(nn.Module):
    """``h = (x + a) + m``, ``a = attn(ln_0(x))``, ``m = mlp(ln_1(x + a))``; x float32 (B, T, width)."""

    def __init__(
        self, width: int, n_state_attn: int, n_state_mlp: int, heads: int, kind: int, block_ctx: int
    ):
        super().__init__()
        self.attn = FactoredAttention(width, n_state_attn, heads, kind, block_ctx)
        self.ln_0 = LayerNorm(width)
        self.mlp = MLP(width, n_state_mlp)
        self.ln_1 = LayerNorm(width)

    def forward(self, x, compute_dtype: torch.dtype):
        x_a = x + self.attn(self.ln_0(x).to(compute_dtype))  # float32 + compute dtype -> float32
        return x_a.add_(self.mlp(self.ln_1(x_a).to(compute_dtype)))  # x_a is this block's own: in place


class Transformer(nn.Module):
    """A stack of ``depth`` blocks; ``kinds[d]`` is block d's attention kind."""

    def __init__(
        self, width: int, depth: int, heads: int, n_state_attn: int, n_state_mlp: int, kinds, block_ctx: int
    ):
        super().__init__()
        self.block_ctx = block_ctx
        self._attn_mods = nn.ModuleList(
            ResAttnBlock(width, n_state_attn, n_state_mlp, heads, kinds[d], block_ctx) for d in range(depth)
        )

    def forward(self, x, compute_dtype: torch.dtype, keep=()):
        """Run the blocks on float32 ``x`` (B, T, width), T a multiple of ``block_ctx``.

        Yields ``(d, h)`` for each 1-based block index ``d`` in ``keep``, ``h`` the
        float32 residual stream after block ``d``; stops after the last one kept.
        """
        if x.shape[1] % self.block_ctx:
            raise ValueError(f"sequence length {x.shape[1]} is not a multiple of block_ctx {self.block_ctx}")
        last = max(keep, default=0)
        for d, block in enumerate(self._attn_mods, start=1):
            if d > last:
                return
            x = block(x, compute_dtype)
            if d in keep:
                yield d, x
