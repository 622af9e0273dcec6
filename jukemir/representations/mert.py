"""MERT-v1 (m-a-p/MERT-v1-95M, m-a-p/MERT-v1-330M): 24 kHz music encoders, mean-pooled over time.

MERT's official code is Hugging Face remote code (``modeling_MERT.py``,
``MERTModel``): a subclass of ``transformers``' ``HubertModel`` (the conv
feature encoder, a feature projection with an optional LayerNorm, the
positional conv embedding and the HuBERT transformer encoder) that adds three
switches to the config:

* ``feature_extractor_cqt``: a CQT front end concatenated to the conv features.
  MERT-v1 checkpoints do not use it; a checkpoint that does is refused.
* ``deepnorm``: post-LayerNorm blocks whose residual branch is scaled by
  ``alpha = (2 * num_hidden_layers) ** 0.25``: ``LN(alpha * x + f(x))``.
* ``attention_relax``: subtracts the row maximum of the (rescaled) attention
  logits before the softmax, which the softmax does not see (it is invariant
  to a per-row shift); it changes no output beyond rounding and is not needed here.

Here the checkpoint is loaded, without remote code, into ``transformers``'
``HubertModel`` with the same config (the same modules and parameter names as
``MERTModel``); for ``deepnorm`` each block's attention and feed-forward output
gets ``(alpha - 1) * input`` added, so that the block's own ``x + f(x)`` becomes
``alpha * x + f(x)``. Audio is prepared by the checkpoint's
``Wav2Vec2FeatureExtractor`` (zero-mean unit-variance per window when its
``do_normalize`` is set), as MERT's documentation does.

Per clip (see :mod:`jukemir.representations.hf` for the shared steps): 24 kHz
mono (resampy ``kaiser_best``), windows of 5 s (MERT-v1's training context), a
hidden state (0: the transformer input, k: block k; default the last block) or
several or ``"all"`` (13 for 95M, 25 for 330M), mean over the 75 Hz frames of all
windows. Output: ``(768,)`` (95M) or ``(1024,)`` (330M) for one layer.

Weights: the hub snapshot ``m-a-p/MERT-v1-95M`` / ``m-a-p/MERT-v1-330M``
(``config.json``, ``preprocessor_config.json``, ``pytorch_model.bin``),
downloaded through :func:`jukemir.representations.hf.hub_snapshot` and trusted on
first use, or a local folder in that format (``weights=``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ..errors import UserError
from .hf import HFEncoder, _needs_transformers, hub_snapshot, weights_folder

_NOT_HUBERT = (
    "model_type",
    "architectures",
    "auto_map",
    "transformers_version",
    "_name_or_path",
    "torch_dtype",
)


class ScaledResidual(nn.Module):
    """``f(x) + (alpha - 1) * x``: inside a block that adds its input, the residual becomes DeepNorm's
    ``alpha * x + f(x)``."""

    def __init__(self, inner: nn.Module, alpha: float):
        super().__init__()
        self.inner, self.alpha = inner, float(alpha)

    def forward(self, hidden_states, *args, **kwargs):
        out = self.inner(hidden_states, *args, **kwargs)
        if isinstance(out, tuple):  # attention returns (output, weights)
            return (out[0] + (self.alpha - 1.0) * hidden_states, *out[1:])
        return out + (self.alpha - 1.0) * hidden_states


def load_mert(folder: Path):
    """``(HubertModel, Wav2Vec2FeatureExtractor)`` of a MERT snapshot folder, in eval mode.

    Raises ``ValueError`` for a config that is not MERT's or uses the CQT front
    end, and for weights that do not cover the model (missing keys).
    """
    transformers = _needs_transformers()
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable config ({exc})") from None
    if raw.get("model_type") != "mert_model":
        raise UserError(
            f"{path}: model_type is {raw.get('model_type')!r}, expected 'mert_model' (a MERT checkpoint)"
        )
    if raw.get("feature_extractor_cqt"):
        raise UserError(
            f"{path}: feature_extractor_cqt is set; MERT with a CQT front end is not supported "
            "(MERT-v1 does not use it)"
        )
    if raw.get("deepnorm") and raw.get("do_stable_layer_norm"):
        raise UserError(
            f"{path}: deepnorm needs post-LayerNorm blocks (do_stable_layer_norm false), "
            "as MERT's code asserts"
        )
    config = transformers.HubertConfig(**{k: v for k, v in raw.items() if k not in _NOT_HUBERT})
    config.conv_pos_batch_norm = False  # MERT's positional conv is weight-normalised
    net, info = transformers.HubertModel.from_pretrained(
        folder, config=config, local_files_only=True, output_loading_info=True
    )
    if info.get("missing_keys"):
        keys = sorted(info["missing_keys"])
        raise UserError(
            f"{folder}: weights do not match MERT's model: {len(keys)} missing ({', '.join(keys[:5])})"
        )
    if raw.get("deepnorm"):
        alpha = (2.0 * config.num_hidden_layers) ** 0.25
        for layer in net.encoder.layers:
            layer.attention = ScaledResidual(layer.attention, alpha)
            layer.feed_forward = ScaledResidual(layer.feed_forward, alpha)
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
    return net.eval(), extractor


class MERT(HFEncoder):
    """MERT-v1; subclasses name the checkpoint. Build once, then ``rep(audio)`` (see the module docstring).

    Args:
        layers: hidden-state index (0..num_hidden_layers), a list of them, or ``"all"``;
            default the last block.
        pool: ``"mean"`` over frames, or ``"none"``.
        window_seconds: window length (default 5 s); ``None`` or 0: the whole clip in one pass.
        device: torch device; default ``cuda`` when available.
        weights: a local snapshot folder (official format); ``None`` downloads the official one.
        revision, mirror: of the hub download.
    """

    name = "mert"
    model_id = ""
    default_window = 5.0

    def __init__(
        self,
        layers: int | Sequence[int] | str | None = None,
        pool: str = "mean",
        window_seconds: float | None = "default",
        device: str | None = None,
        weights: str | os.PathLike | None = None,
        revision: str = "main",
        mirror: str | None = None,
    ):
        folder = weights_folder(weights)
        super().__init__(
            str(folder) if folder is not None else self.model_id,
            layers=layers,
            pool=pool,
            window_seconds=window_seconds,
            device=device,
            revision=revision,
            mirror=mirror,
        )
        self.model_ref = self.model_id  # a local copy is identified by its files' sha256 (options "weights")

    def official_snapshot(self, model_id: str, revision: str, mirror: str | None) -> Path:
        hint = "pass --weights FOLDER holding config.json, preprocessor_config.json and pytorch_model.bin"
        return hub_snapshot(model_id, revision, mirror, mirror_folder=f"weights/{self.name}", hint=hint)

    def load_model(self, folder: Path):
        return load_mert(folder)


class MERT95M(MERT):
    name = "mert-v1-95m"
    model_id = "m-a-p/MERT-v1-95M"


class MERT330M(MERT):
    name = "mert-v1-330m"
    model_id = "m-a-p/MERT-v1-330M"


__all__ = ["MERT", "MERT95M", "MERT330M", "ScaledResidual", "load_mert"]
