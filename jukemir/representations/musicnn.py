"""musicnn: mean- and max-pooled mid-end features of Pons & Serra's musicnn (docs/fidelity/musicnn.md).

Per clip (mono, 16 kHz, resampy ``kaiser_best``, no normalisation), as
``musicnn.extractor(file, model, extract_features=True)`` at commit 516acb2:

1. a mel power spectrogram as librosa 0.7 computed it: n_fft 512, hop 256,
   centred frames with reflect padding, Hann window, 96 Slaney mels
   (area-normalised, 0-8 kHz), power 2 -> ``(frames, 96)``;
2. ``log10(10000 x + 1)``. ``musicnn_log="float16"`` (default, the original)
   first rounds the mel values to float16, as the original's
   ``audio_rep.astype(np.float16)`` did, then computes in float32: under the
   NumPy 1.x promotion rules of the original's environment, ``10000 * a``
   with ``a`` a float16 array and ``10000`` a Python int is float32 (the int
   does not fit float16 exactly), so nothing overflows in the arithmetic. Only
   a mel power above 65,504 (the float16 maximum, needing samples far beyond
   full scale) becomes +inf in the cast, and the features are then non-finite.
   ``"float32"`` skips the float16 rounding.
3. non-overlapping patches of 187 frames (3 s); the tail that does not fill a
   patch is dropped, and a clip shorter than one patch (47,616 samples) is an
   error;
4. each patch through the front end and mid end (BatchNorm with its moving
   statistics, epsilon 1e-3 as ``tf.layers.batch_normalization``), then the
   mean and the max over the 187 frames of the dense mid-end output
   (D = 561 + 3 x F channels, F = 512 for ``MSD_musicnn_big``, 64 otherwise);
5. the per-patch mean-pool and max-pool vectors each averaged over the patches
   and concatenated: ``[mean_pool (D), max_pool (D)]`` -> 4,194 for the paper's
   ``MSD_musicnn_big``, 1,506 for ``MSD_musicnn`` and ``MTT_musicnn``.

Network (``build_musicnn``; TF NHWC (batch, time, mel, 1) here as NCHW):

* front end: BatchNorm of the input; timbral convs of 204 filters with kernels
  7 x 38 and 7 x 67 over (time, mel), 'valid' after padding time by 3 on both
  sides; temporal convs of 51 filters with kernels 128, 64 and 32 over time,
  TF 'same' (time padded by (k-1)//2 before and k//2 after). Each conv is
  followed by ReLU, BatchNorm, and the max over the mel axis. Concatenated:
  [timbral 38, timbral 67, temporal 128, 64, 32] = 204 + 204 + 3 x 51 = 561.
* mid end: three convs of F filters, kernel 7 over time (time padded by 3),
  each ReLU then BatchNorm; the 2nd and 3rd add their input (residual). The
  output is the dense concatenation [front end, c1, c1 + c2, c1 + c2 + c3].
* back end (for the taggram only): max and mean over time, interleaved per
  channel ``[max_0, mean_0, max_1, ...]`` as TF's flatten of ``concat([max,
  mean], 2)``; BatchNorm, dense (500 or 200) with ReLU, BatchNorm, dense to the
  50 tags, sigmoid.

The original ran one patch at a time (batch size 1); BatchNorm in inference
mode makes the result independent of batching, so here the patches of all the
clips of a :meth:`Musicnn.batch` call go through the network together.

Read naively, the original computes the log in float16, which overflows above
a mel power of ~6.55; that holds under NumPy >= 2 (NEP 50), not under the
NumPy 1.x the original ran with. The original's published tags for musicnn's
example clip (``joram-moments_of_clarity-08-solipsism-59-88.mp3``, where a third
of the frames exceed 6.55) are finite and the ones this module gives.

Weights: the TF 1 checkpoints of the musicnn git tree at commit 516acb2
(``musicnn/<model>/.index`` and ``.data-00000-of-00001``), declared as a
:class:`jukemir.weights.Official`, read with :mod:`jukemir.tfcheckpoint` (no
TensorFlow) and converted once into ``<cache>/models/musicnn/converted/<sha256
of the .data>/<model>.npz``. The files of ``MSD_musicnn`` and
``MTT_musicnn`` and the big model's ``.index`` have sha256 checksums. The big
model's ``.data`` (95,817,164 bytes, the size its index implies) is verified on
first download against its git object id at that commit (sha1 of ``"blob
<size>\\0" + bytes``) and its sha256 is then recorded in
``<cache>/models/musicnn/sha256.json`` for later checks.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..assets import CHUNK, Asset, file_checksum
from ..datasets import MTT_TOP50
from ..device import torch_device
from ..errors import UserError
from ..io import atomic_write
from ..tfcheckpoint import data_path, load_checkpoint, read_index
from ..weights import Official, check_keys, convert_once, converted_dir
from .base import Representation

SAMPLE_RATE = 16_000
N_FFT, HOP, N_MELS = 512, 256, 96
PATCH = 187  # librosa.time_to_frames(3 s) + 1
MIN_SAMPLES = (PATCH - 1) * HOP  # centred frames: 1 + n // HOP >= PATCH
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default
TIMBRAL = (38, 67)  # int(0.4 * 96), int(0.7 * 96) mel bins, 7 frames
TIMBRAL_FILTERS = 204  # int(1.6 * 128)
TEMPORAL = (128, 64, 32)  # frames, 1 mel bin
TEMPORAL_FILTERS = 51  # int(1.6 * 32)
FRONT = len(TIMBRAL) * TIMBRAL_FILTERS + len(TEMPORAL) * TEMPORAL_FILTERS  # 561
LOGS = ("float16", "float32")

MSD_LABELS = [
    "rock",
    "pop",
    "alternative",
    "indie",
    "electronic",
    "female vocalists",
    "dance",
    "00s",
    "alternative rock",
    "jazz",
    "beautiful",
    "metal",
    "chillout",
    "male vocalists",
    "classic rock",
    "soul",
    "indie rock",
    "Mellow",
    "electronica",
    "80s",
    "folk",
    "90s",
    "chill",
    "instrumental",
    "punk",
    "oldies",
    "blues",
    "hard rock",
    "ambient",
    "acoustic",
    "experimental",
    "female vocalist",
    "guitar",
    "Hip-Hop",
    "70s",
    "party",
    "country",
    "easy listening",
    "sexy",
    "catchy",
    "funk",
    "electro",
    "heavy metal",
    "Progressive rock",
    "60s",
    "rnb",
    "indie pop",
    "sad",
    "House",
    "happy",
]


@dataclass(frozen=True)
class ModelSpec:
    """One musicnn variant: mid-end filters, back-end units, tag vocabulary."""

    midend: int
    backend: int
    labels: tuple

    @property
    def channels(self) -> int:
        """D: channels per frame of the dense mid-end output (561 + 3 F)."""
        return FRONT + 3 * self.midend


MODELS = {
    "MSD_musicnn_big": ModelSpec(512, 500, tuple(MSD_LABELS)),
    "MSD_musicnn": ModelSpec(64, 200, tuple(MSD_LABELS)),
    "MTT_musicnn": ModelSpec(64, 200, tuple(MTT_TOP50)),
}

COMMIT = "516acb2a0ff5ef73f64547898e018e793152c506"
CHECKPOINT_FILES = (".index", ".data-00000-of-00001")
# (model, file) -> (sha256 or None, git object id at COMMIT, bytes)
OFFICIAL = {
    ("MSD_musicnn_big", ".index"): (
        "d83b6453d94b455cdabfe627f4abe6007b6bfd5299f70d662be7e917786b99f6",
        "879aed424637e59e5928e8395070778494d3d304",
        5_040,
    ),
    ("MSD_musicnn_big", ".data-00000-of-00001"): (
        None,
        "8797b12a184750ac483685d294a715259922b1b4",
        95_817_164,
    ),
    ("MSD_musicnn", ".index"): (
        "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
        "328f5c0b2eab5e90e98da7275b6d9e2dc705c285",
        4_948,
    ),
    ("MSD_musicnn", ".data-00000-of-00001"): (
        "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
        "e5be466c61f5fac71c7b5b68b24aad628965a494",
        9_465_596,
    ),
    ("MTT_musicnn", ".index"): (
        "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
        "9d5daefda36e9dd7b192870133267e9eed9cccb8",
        4_948,
    ),
    ("MTT_musicnn", ".data-00000-of-00001"): (
        "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab",
        "a7f9a45290ac0f657d14cc0fba3a02c1e3632953",
        9_465_596,
    ),
}


def _check_model(model: str) -> ModelSpec:
    if model not in MODELS:
        raise UserError(f"unknown musicnn model {model!r}; expected one of {', '.join(MODELS)}")
    return MODELS[model]


# ----------------------------------------------------------------- spectrogram


def log_mel(audio: np.ndarray, musicnn_log: str = "float16") -> np.ndarray:
    """The network input of a mono 16 kHz clip: ``log10(10000 mel + 1)``, ``(frames, 96)`` float32.

    ``frames = 1 + len(audio) // 256``. ``musicnn_log="float16"`` rounds the
    mel values to float16 first (+inf above 65,504), as the original did.
    """
    import librosa

    if musicnn_log not in LOGS:
        raise UserError(f"musicnn_log must be 'float16' or 'float32', got {musicnn_log!r}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
    # librosa 0.7's defaults, explicit where later versions changed them (pad_mode).
    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP,
        n_mels=N_MELS,
        power=2.0,
        center=True,
        pad_mode="reflect",
        window="hann",
        htk=False,
        norm="slaney",
    ).T
    if musicnn_log == "float16":
        with np.errstate(over="ignore"):
            mel = mel.astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * mel + np.float32(1)).astype(np.float32)


def patches(audio: np.ndarray, musicnn_log: str = "float16") -> np.ndarray:
    """Non-overlapping 187-frame patches of :func:`log_mel`, ``(n_patches, 187, 96)``; the tail is dropped.

    Raises ``ValueError("audio too short ...")`` below 47,616 samples (2.98 s).
    """
    n = len(audio)
    if n < MIN_SAMPLES:
        raise UserError(
            f"audio too short: {n} samples ({n / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz); musicnn needs at "
            f"least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.2f} s, one patch of {PATCH} frames)"
        )
    spec = log_mel(audio, musicnn_log)
    n_patches = len(spec) // PATCH
    return spec[: n_patches * PATCH].reshape(n_patches, PATCH, N_MELS)


# ---------------------------------------------------------------------- network


def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm1d(channels, eps=BN_EPS)


def _relu_bn_max_over_mel(y: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(relu(y)).amax(dim=3)`` for ``(B, C, T, mel)`` in inference mode, computed after the max.

    ReLU and BatchNorm's per-channel affine map are monotone, so the max over
    mel of the result is the map of the max (or, where the scale is negative,
    of the min) of ``y``: the full-size tensor is never normalised.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    extreme = torch.where(scale[:, None] >= 0, y.amax(dim=3), y.amin(dim=3))
    return F.relu(extreme) * scale[:, None] + shift[:, None]


class MusicnnNet(nn.Module):
    """musicnn's ``build_musicnn``: front end, dense mid end, pooled back end.

    ``features(x)`` maps patches ``(B, 187, 96)`` to the dense mid-end output
    ``(B, D, 187)``; ``forward(x)`` to ``(mean_pool, max_pool)``, each ``(B, D)``;
    ``taggram(x)`` to tag probabilities ``(B, n_tags)``.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        f = spec.midend
        self.input_bn = nn.BatchNorm2d(1, eps=BN_EPS)
        self.timbral = nn.ModuleList(nn.Conv2d(1, TIMBRAL_FILTERS, (7, k)) for k in TIMBRAL)
        self.timbral_bn = nn.ModuleList(nn.BatchNorm2d(TIMBRAL_FILTERS, eps=BN_EPS) for _ in TIMBRAL)
        self.temporal = nn.ModuleList(nn.Conv2d(1, TEMPORAL_FILTERS, (k, 1)) for k in TEMPORAL)
        self.temporal_bn = nn.ModuleList(nn.BatchNorm2d(TEMPORAL_FILTERS, eps=BN_EPS) for _ in TEMPORAL)
        self.midend = nn.ModuleList(nn.Conv1d(c, f, 7, padding=3) for c in (FRONT, f, f))
        self.midend_bn = nn.ModuleList(_bn(f) for _ in range(3))
        self.pool_bn = _bn(2 * spec.channels)
        self.dense = nn.Linear(2 * spec.channels, spec.backend)
        self.dense_bn = _bn(spec.backend)
        self.logits = nn.Linear(spec.backend, len(spec.labels))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Patches ``(B, 187, 96)`` -> dense mid-end output ``(B, 561 + 3F, 187)``."""
        x = self.input_bn(x[:, None])  # (B, 1, T, mel)
        padded = F.pad(x, (0, 0, 3, 3))  # time only: 'same' in time, 'valid' in mel
        front = [_relu_bn_max_over_mel(conv(padded), bn) for conv, bn in zip(self.timbral, self.timbral_bn)]
        for conv, bn, k in zip(self.temporal, self.temporal_bn, TEMPORAL):
            same = F.pad(x, (0, 0, (k - 1) // 2, k // 2))  # TF 'same' for an even kernel
            front.append(_relu_bn_max_over_mel(conv(same), bn))
        out = [torch.cat(front, dim=1)]  # (B, 561, T)
        h = out[0]
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            y = bn(F.relu(conv(h)))
            h = y if i == 0 else y + h
            out.append(h)
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches ``(B, 187, 96)`` -> ``(mean_pool, max_pool)``, each ``(B, 561 + 3F)``."""
        h = self.features(x)
        return h.mean(dim=2), h.amax(dim=2)

    def taggram(self, x: torch.Tensor) -> torch.Tensor:
        """Patches ``(B, 187, 96)`` -> tag probabilities ``(B, n_tags)`` (the original's back end)."""
        mean, peak = self(x)
        pooled = torch.stack([peak, mean], dim=2).flatten(1)  # TF flatten of concat([max, mean], 2)
        hidden = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return torch.sigmoid(self.logits(hidden))

    def load_tf(self, weights: dict[str, np.ndarray]) -> None:
        """Copy TF-named, TF-layout arrays (as :func:`tf_variables` lists them) into the modules."""
        state = {}
        for tf_name, (torch_name, convert) in _variable_map(self.spec).items():
            state[torch_name] = torch.from_numpy(
                np.ascontiguousarray(convert(weights[tf_name]), dtype=np.float32)
            )
        for name, buf in self.state_dict().items():
            if name.endswith("num_batches_tracked"):
                state[name] = buf
        self.load_state_dict(state, strict=True)


def _modules_in_tf_order(spec: ModelSpec) -> list[tuple[str, str]]:
    """(kind, torch module path) in the order ``build_musicnn`` creates its TF layers."""
    layers = [("bn", "input_bn")]
    for i in range(len(TIMBRAL)):
        layers += [("conv", f"timbral.{i}"), ("bn", f"timbral_bn.{i}")]
    for i in range(len(TEMPORAL)):
        layers += [("conv", f"temporal.{i}"), ("bn", f"temporal_bn.{i}")]
    for i in range(3):
        layers += [("conv1d", f"midend.{i}"), ("bn", f"midend_bn.{i}")]
    layers += [("bn", "pool_bn"), ("dense", "dense"), ("bn", "dense_bn"), ("dense", "logits")]
    return layers


def _conv2d_kernel(w):
    """TF conv kernel ``(kh, kw, in, out)`` -> torch ``(out, in, kh, kw)``."""
    return np.transpose(w, (3, 2, 0, 1))


def _conv1d_kernel(w):
    """TF kernel ``(7, in, 1, out)`` over (time, channel) -> torch Conv1d ``(out, in, 7)``."""
    return np.transpose(w[:, :, 0, :], (2, 1, 0))


def _variable_map(spec: ModelSpec) -> dict:
    """TF variable name -> (torch parameter name, TF-layout -> torch-layout function).

    TF 1 names layers by creation order (``conv2d``, ``conv2d_1``, ...;
    ``batch_normalization``, ``batch_normalization_1``, ...; ``dense``, ``dense_1``).
    """
    counts: dict[str, int] = {}
    mapping = {}

    def tf_name(kind):
        n = counts.get(kind, 0)
        counts[kind] = n + 1
        return kind if n == 0 else f"{kind}_{n}"

    identity = np.asarray
    for kind, path in _modules_in_tf_order(spec):
        if kind == "bn":
            scope = tf_name("batch_normalization")
            for tf_var, torch_var in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            ):
                mapping[f"{scope}/{tf_var}"] = (f"{path}.{torch_var}", identity)
        else:
            scope = tf_name("dense" if kind == "dense" else "conv2d")
            if kind == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
                kernel = _conv2d_kernel
            elif kind == "conv1d":  # (7, in, 1, out) over (time, channel) -> Conv1d (out, in, 7)
                kernel = _conv1d_kernel
            else:  # (in, out) -> (out, in)
                kernel = np.transpose
            mapping[f"{scope}/kernel"] = (f"{path}.weight", kernel)
            mapping[f"{scope}/bias"] = (f"{path}.bias", identity)
    return mapping


def tf_variables(model: str) -> dict[str, tuple]:
    """The model variables (name -> shape, TF layout) that ``build_musicnn`` creates for ``model``.

    Optimizer state (``*/Adam``, ``*/Adam_1``, ``beta{1,2}_power``), which the
    shipped checkpoints also hold, is not part of the model.
    """
    spec = _check_model(model)
    net = MusicnnNet(spec)
    shapes = {name: tuple(p.shape) for name, p in net.state_dict().items()}
    out = {}
    for tf_name, (torch_name, _) in _variable_map(spec).items():
        shape = shapes[torch_name]
        if tf_name.endswith("/kernel"):
            if len(shape) == 4:
                shape = (shape[2], shape[3], shape[1], shape[0])
            elif len(shape) == 3:
                shape = (shape[2], shape[1], 1, shape[0])
            else:
                shape = (shape[1], shape[0])
        out[tf_name] = shape
    return out


def read_tf_weights(prefix: str | os.PathLike, model: str) -> dict[str, np.ndarray]:
    """The model variables of the TF checkpoint ``prefix`` (TF names and layout), checked against ``model``.

    Raises ``ValueError`` naming the missing, unexpected or misshapen
    variables when the checkpoint is not a ``model`` checkpoint.
    """
    expected = tf_variables(model)
    _, entries = read_index(prefix)
    found = {n: e.shape for n, e in entries.items() if not _is_optimizer_state(n)}
    check_keys(found, expected, f"{prefix} (musicnn {model})")
    return load_checkpoint(prefix, expected)


def _is_optimizer_state(name: str) -> bool:
    return name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power")


# ---------------------------------------------------------------------- weights


def git_blob_sha1(path: str | os.PathLike) -> str:
    """Git's object id of a file: sha1 of ``b"blob <size>\\0"`` followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def official(model: str) -> Official:
    """The ``.index`` and ``.data`` files of ``model`` in the musicnn git tree at commit 516acb2.

    A file with a sha256 is checked against it. The big model's ``.data`` has
    none published: its first download must have the size its index implies
    and the git object id of the commit's tree, after which its sha256 is
    recorded in ``<cache>/models/musicnn/sha256.json``.
    """
    _check_model(model)
    base = f"https://raw.githubusercontent.com/jordipons/musicnn/{COMMIT}/musicnn/{model}/"
    cdn = f"https://cdn.jsdelivr.net/gh/jordipons/musicnn@{COMMIT}/musicnn/{model}/"
    assets = []
    for name in CHECKPOINT_FILES:
        sha256, _, size = OFFICIAL[model, name]
        tag = f"MUSICNN_{model.upper()}_{name.strip('.').split('-')[0].upper()}"
        assets.append(
            Asset(
                tag,
                f"models/musicnn/{model}/{name}",
                (base + name, cdn + name),
                sha256,
                size,
                mirror_path=f"weights/musicnn/{model}/{name}",
                hint=f"pass --weights FOLDER holding {model}'s .index and .data-00000-of-00001",
            )
        )

    def same_blob(path: Path) -> None:
        blob, got = OFFICIAL[model, path.name][1], git_blob_sha1(path)
        if got != blob:
            raise UserError(f"{path}: git object id {got}, expected {blob} (musicnn commit {COMMIT[:7]})")

    return Official("musicnn", tuple(assets), check=same_blob)


def load_weights(model: str, weights: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], str]:
    """TF-named, TF-layout arrays of ``model`` and an id of their source (a sha256).

    ``weights``:

    * ``None``: the official checkpoint, downloaded and converted once into
      ``<cache>/models/musicnn/converted/<id>/<model>.npz`` (id: sha256 of its ``.data`` file);
    * a TF checkpoint prefix or its folder, read directly (id: the same);
    * a ``.npz`` of TF-named arrays, as the conversion holds (id: sha256 of the file).

    Raises ``ValueError`` when the variables are not exactly ``model``'s.
    """
    _check_model(model)
    expected = tf_variables(model)
    if weights is not None and os.fspath(weights).endswith(".npz"):
        state, source = _read_npz(weights), file_checksum(weights)
        state.pop(
            "source_sha256", None
        )  # the source's id, which conversions before the converted/ folders held
        check_keys({k: v.shape for k, v in state.items()}, expected, f"{weights} (musicnn {model})")
        return state, source
    if weights is not None:
        header, _ = read_index(weights)
        return read_tf_weights(weights, model), file_checksum(data_path(weights, 0, header["num_shards"]))
    files = official(model)
    data = files.assets[1]
    if files.sha256(data) is None:  # the big model's data before its first download: record it
        files.fetch()
    source = files.sha256(data)

    def convert(dst: Path) -> None:
        prefix = files.fetch()[0].parent
        state = read_tf_weights(prefix, model)
        with atomic_write(dst) as handle:
            np.savez(handle, **state)

    converted = convert_once(converted_dir("musicnn", source) / f"{model}.npz", convert, f"musicnn {model}")
    return _read_npz(converted), source


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz of musicnn weights ({exc})") from None


# ---------------------------------------------------------------- representation


class Musicnn(Representation):
    """The paper's musicnn representation (4,194-d with ``MSD_musicnn_big``).

    Args:
        model: ``"MSD_musicnn_big"`` (the paper's), ``"MSD_musicnn"`` or
            ``"MTT_musicnn"`` (1,506-d).
        musicnn_log: ``"float16"`` (the original, may give inf/NaN features) or
            ``"float32"`` (fixed); see the module docstring.
        device: torch device; default ``cuda`` when available, else ``cpu``.
        weights: a TF checkpoint prefix (or its folder) of ``model``, or a
            ``.npz`` of its TF-named arrays; ``None`` downloads the official one.
    """

    name = "musicnn"
    version = "1"
    sample_rate = SAMPLE_RATE
    normalize = False
    resampler = "kaiser_best"
    preferred_batch = 8

    def __init__(
        self,
        model: str = "MSD_musicnn_big",
        musicnn_log: str = "float16",
        device: str | None = None,
        weights: str | os.PathLike | None = None,
    ):
        self.spec = _check_model(model)
        if musicnn_log not in LOGS:
            raise UserError(f"musicnn_log must be 'float16' (the original) or 'float32', got {musicnn_log!r}")
        self.model, self.musicnn_log = model, musicnn_log
        self.dim = 2 * self.spec.channels
        self.may_be_nonfinite = musicnn_log == "float16"
        self.device = torch_device(device)
        self.patches_per_forward = 128 if self.device.type == "cuda" else 16
        state, self.weights_id = load_weights(model, weights)
        self.net = MusicnnNet(self.spec)
        self.net.load_tf(state)
        self.net.to(self.device).eval()

    @property
    def labels(self) -> list[str]:
        """The model's 50 tags, in the order of :meth:`taggram`'s columns."""
        return list(self.spec.labels)

    def options(self) -> dict:
        return {"model": self.model, "musicnn_log": self.musicnn_log, "weights": self.weights_id}

    def _run(self, x: np.ndarray, fn) -> list[torch.Tensor]:
        outs = []
        # float32 as TF computed it: no TF32 in cuDNN convolutions (on by default).
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for s in range(0, len(x), self.patches_per_forward):
                outs.append(fn(torch.from_numpy(x[s : s + self.patches_per_forward]).to(self.device)))
        return outs

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at 16 kHz -> ``(dim,)`` float32."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips at 16 kHz -> a ``(dim,)`` float32 per clip, independent of the batch.

        The patches of all clips go through the network together,
        :attr:`patches_per_forward` at a time.
        """
        per_clip = [patches(a, self.musicnn_log) for a in audios]
        if not per_clip:
            return []
        outs = self._run(np.concatenate(per_clip), self.net)
        mean = torch.cat([m for m, _ in outs]).cpu().numpy()
        peak = torch.cat([p for _, p in outs]).cpu().numpy()
        bounds = np.cumsum([0] + [len(p) for p in per_clip])
        return [
            np.concatenate([mean[a:b].mean(axis=0), peak[a:b].mean(axis=0)]).astype(np.float32)
            for a, b in itertools.pairwise(bounds)
        ]

    def taggram(self, audio: np.ndarray) -> np.ndarray:
        """Tag probabilities of each 3 s patch of a 16 kHz clip: ``(n_patches, 50)``, columns
        :attr:`labels`."""
        x = patches(audio, self.musicnn_log)
        return torch.cat(self._run(x, self.net.taggram)).cpu().numpy()
