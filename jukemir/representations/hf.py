"""``hf:<model>``: any Hugging Face audio encoder (wav2vec2, HuBERT, data2vec-audio, WavLM, AST, ...).

``<model>`` is a hub id (``facebook/wav2vec2-base``) or a local folder in the
hub's format (``config.json``, ``preprocessor_config.json`` and
``model.safetensors`` or ``pytorch_model.bin``). The model is built by
``transformers`` (``AutoConfig``/``AutoModel``/``AutoFeatureExtractor``, never
with remote code) and run as its own documentation runs it:

1. audio at the feature extractor's ``sampling_rate``, mono, not normalised
   (the feature extractor does what the model expects, e.g. zero-mean
   unit-variance for wav2vec2, filter banks for AST);
2. cut into consecutive windows of ``window_seconds`` (default 10 s; ``None``:
   the whole clip in one pass); a last window shorter than the model's
   receptive field is dropped when there are others;
3. each window through the feature extractor and the model
   (``output_hidden_states=True``); layer 0 is the transformer's input
   (``hidden_states[0]``), layer k the output of block k, as ``transformers``
   numbers them; the default is the last block;
4. ``pool="mean"``: the mean over every frame (token) of every window;
   ``"none"``: the frames kept.

Output of one clip, float32: one layer -> ``(dim,)`` (mean) or ``(T, dim)``;
several layers (``layers=[...]`` or ``"all"``) -> ``(n_layers, dim)`` or
``(n_layers, T, dim)``.

Hub ids are downloaded once, as a :class:`jukemir.weights.Official`, into
``<cache>/models/hf/<id>/<revision>/`` (trusted on first use: later
retrievals must match the recorded sha256), trying the mirror
(``$JUKEMIR_MIRROR``) first at ``<mirror>/models/hf/<id>/<revision>/<file>``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..assets import Asset, DownloadError, file_checksum
from ..device import torch_device
from ..errors import NotFoundError, UserError
from ..weights import Official
from .base import Representation, layered_output_shape

HUB = "https://huggingface.co"
CONFIG_FILES = ("config.json", "preprocessor_config.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # tried in this order
POOLS = ("mean", "none")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _needs_transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("Hugging Face models need transformers: pip install 'jukemir[hf]'") from None
    return transformers


def hub_snapshot(
    model_id: str,
    revision: str = "main",
    mirror: str | None = None,
    mirror_folder: str | None = None,
    hint: str | None = None,
) -> Path:
    """Download (or find) a hub model's config, feature-extractor config and weights; return their folder.

    Files go to ``<cache>/models/hf/<model_id>/<revision>/``; each is trusted on
    first use (its sha256 is recorded in ``sha256.json`` there and checked on
    every later retrieval). The weights are ``model.safetensors`` or, when the
    hub has none, ``pytorch_model.bin``. A mirror is asked at
    ``<mirror_folder>/<file>`` (a jukemir asset mirror's layout, e.g.
    ``weights/mert-v1-95m``) when given, then at the cache's own path; ``hint``
    says how else to provide the files. Raises :class:`jukemir.assets.DownloadError`.
    """
    if not _HUB_ID.fullmatch(model_id) or ".." in model_id:
        raise UserError(f"{model_id!r} is neither a local folder nor a Hugging Face model id (org/name)")
    if not _REVISION.fullmatch(revision):
        raise UserError(f"revision {revision!r} must be a branch, tag or commit name")
    home = f"hf/{model_id}/{revision}"

    def files(*names: str) -> Official:
        assets = []
        for name in names:
            tag = re.sub(r"[^A-Z0-9]+", "_", f"HF_{model_id}_{revision}_{name}".upper())
            mirror_path = f"{mirror_folder}/{name}" if mirror_folder else None
            assets.append(
                Asset(
                    tag,
                    f"models/{home}/{name}",
                    (f"{HUB}/{model_id}/resolve/{revision}/{name}",),
                    mirror_path=mirror_path,
                    hint=hint or "name a local folder holding them: hf:/path/to/folder",
                )
            )
        return Official(home, tuple(assets))

    configs = files(*CONFIG_FILES)
    configs.fetch(mirror)
    errors = []
    for name in WEIGHT_FILES:
        try:
            files(name).fetch(mirror)
            return configs.folder
        except DownloadError as exc:
            if "checksum mismatch" in str(exc):
                raise  # the file is there but is not the one recorded: never fall back to another
            errors.append(str(exc))
    raise DownloadError(f"{model_id}: no weights ({' or '.join(WEIGHT_FILES)}): " + "; ".join(errors))


def snapshot_files(folder: Path) -> list[Path]:
    """The files of a local snapshot that define the model: configs and weights (the first weights file
    found)."""
    missing = [n for n in CONFIG_FILES if not (folder / n).is_file()]
    weights = [folder / n for n in WEIGHT_FILES if (folder / n).is_file()]
    if missing or not weights:
        need = missing + ([] if weights else [" or ".join(WEIGHT_FILES)])
        raise NotFoundError(f"{folder}: not a Hugging Face model folder (missing {', '.join(need)})")
    return [folder / n for n in CONFIG_FILES] + weights[:1]


def receptive_field(config) -> int:
    """Samples one output frame sees through a wav2vec2-style conv front end (1 for models without one)."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not kernels or not strides:
        return 1
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


class HFEncoder(Representation):
    """A Hugging Face audio encoder, mean-pooled over time (see the module docstring).

    Args:
        model: hub id (``org/name``) or local folder in the hub's format.
        layers: hidden-state index, a list of them, or ``"all"``; default the last block.
        pool: ``"mean"`` over frames, or ``"none"`` to keep them.
        window_seconds: length of the windows a clip is cut into; ``None`` or 0 for one pass.
        device: torch device; default ``cuda`` when available, else ``cpu``.
        revision: hub branch, tag or commit of a hub id.
        mirror: base URL or folder tried first for hub files.
    """

    name = "hf"
    version = "1"
    normalize = False
    resampler = "kaiser_best"
    default_window: float | None = 10.0

    def __init__(
        self,
        model: str,
        layers: int | Sequence[int] | str | None = None,
        pool: str = "mean",
        window_seconds: float | None = "default",
        device: str | None = None,
        revision: str = "main",
        mirror: str | None = None,
    ):
        if pool not in POOLS:
            raise UserError(f"{self.name} pool must be one of {', '.join(POOLS)}, got {pool!r}")
        window = self.default_window if window_seconds == "default" else window_seconds
        if window is not None and not float(window) >= 0:
            raise UserError(
                f"window_seconds must be > 0, or 0 or None (the whole clip), got {window_seconds!r}"
            )
        window = window or None
        self.model_ref, self.pool, self.revision = str(model), pool, revision
        self.window_seconds = None if window is None else float(window)
        self.device = torch_device(device)
        folder = Path(model).expanduser()
        if not folder.is_dir():
            folder = self.official_snapshot(str(model), revision, mirror)
        files = snapshot_files(folder)
        self.net, self.extractor = self.load_model(folder)
        self.net = self.net.to(self.device).eval().requires_grad_(False)
        self.weights_id = {f.name: file_checksum(f) for f in files}
        config = self.net.config
        self.sample_rate = int(self.extractor.sampling_rate)
        self.dim = int(config.hidden_size)
        self.n_layers = int(config.num_hidden_layers)
        self.layers = self._layers(layers)
        self.min_samples = receptive_field(config)
        self.windows_per_forward = 16 if self.device.type == "cuda" else 8
        self.preferred_batch = 4

    # ------------------------------------------------------------ loading
    def official_snapshot(self, model_id: str, revision: str, mirror: str | None) -> Path:
        """The local folder of a hub model (downloaded and verified on first use)."""
        return hub_snapshot(model_id, revision, mirror)

    def load_model(self, folder: Path):
        """``(model, feature extractor)`` of a hub-format folder, built by ``transformers`` without remote
        code."""
        transformers = _needs_transformers()
        config = transformers.AutoConfig.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False
        )
        if getattr(config, "model_type", None) == "mert_model":
            raise UserError(
                f"{folder}: a MERT model; use the representation mert-v1-95m or mert-v1-330m "
                "(with weights=<this folder>)"
            )
        net, info = transformers.AutoModel.from_pretrained(
            folder, config=config, local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
        if info.get("missing_keys"):
            raise UserError(
                f"{folder}: weights do not match the model: "
                f"missing {', '.join(sorted(info['missing_keys'])[:5])}"
            )
        extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        return net, extractor

    def _layers(self, layers) -> list[int]:
        if layers is None:
            return [self.n_layers]
        if isinstance(layers, str):
            if layers != "all":
                raise UserError(f"{self.name} layers must be integers or 'all', got {layers!r}")
            return list(range(self.n_layers + 1))
        layers = [int(x) for x in ([layers] if isinstance(layers, (int, np.integer)) else layers)]
        bad = [x for x in layers if not 0 <= x <= self.n_layers]
        if not layers or bad or len(set(layers)) != len(layers):
            raise UserError(
                f"{self.name} layers must be distinct integers in 0..{self.n_layers} "
                f"(0: the transformer's input), got {layers}"
            )
        return layers

    # ------------------------------------------------------------ contract
    @property
    def output_shape(self) -> tuple:
        return layered_output_shape(self.dim, self.layers, self.pool)

    def options(self) -> dict:
        return {
            "model": self.model_ref,
            "layers": self.layers,
            "pool": self.pool,
            "window_seconds": self.window_seconds,
            "weights": self.weights_id,
            "transformers": _needs_transformers().__version__,
        }

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at :attr:`sample_rate` Hz (see the module docstring for the output shape)."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips; the windows of all of them run together (:attr:`windows_per_forward` of one length at
        a time)."""
        windows, owner = [], []
        for i, audio in enumerate(audios):
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 1:
                raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
            if len(audio) < self.min_samples:
                raise UserError(
                    f"audio too short: {len(audio)} samples ({len(audio) / self.sample_rate:.3f} s); "
                    f"{self.name} needs at least {self.min_samples} samples at {self.sample_rate} Hz"
                )
            if not np.isfinite(audio).all():
                raise UserError("audio contains non-finite samples")
            for window in self.windows(audio):
                windows.append(window)
                owner.append(i)
        states = self.hidden_states(windows)
        results = []
        for i in range(len(audios)):
            frames = torch.cat([s for s, o in zip(states, owner) if o == i], dim=1)  # (n_layers, T, dim)
            out = (frames.mean(dim=1) if self.pool == "mean" else frames).float().cpu().numpy()
            results.append(out[0] if len(self.layers) == 1 else out)
        return results

    def windows(self, audio: np.ndarray) -> list[np.ndarray]:
        """Consecutive windows of :attr:`window_seconds` (the whole clip when None)."""
        if self.window_seconds is None:
            return [audio]
        n = max(1, round(self.window_seconds * self.sample_rate))
        chunks = [audio[i : i + n] for i in range(0, len(audio), n)]
        if len(chunks) > 1 and len(chunks[-1]) < self.min_samples:
            chunks.pop()
        return chunks

    def hidden_states(self, windows: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per window, the selected layers' frames ``(n_layers, T, dim)``; windows of equal length run
        together."""
        out: list[torch.Tensor | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(len(w), []).append(i)
        with torch.inference_mode():
            for same in by_length.values():
                for start in range(0, len(same), self.windows_per_forward):
                    idx = same[start : start + self.windows_per_forward]
                    batch = [windows[i] for i in idx]
                    inputs = self.extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt")
                    inputs = {k: v.to(self.device) for k, v in inputs.items()}
                    states = self.net(**inputs, output_hidden_states=True).hidden_states
                    stacked = torch.stack([states[k] for k in self.layers], dim=1)  # (B, n_layers, T, dim)
                    for i, row in zip(idx, stacked):
                        out[i] = row
        return out


def weights_folder(weights: str | os.PathLike | None) -> Path | None:
    """A local snapshot folder given as ``weights`` (None: download the official one)."""
    if weights is None:
        return None
    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: weights must be a folder in the Hugging Face format")
    return folder


__all__ = ["HFEncoder", "hub_snapshot", "receptive_field", "snapshot_files"]
