"""choi: 160-d transfer features of Choi et al. 2017, ported from Keras 1 / Theano (docs/fidelity/choi.md).

Per clip (mono, 12 kHz, resampled with ``scipy.signal.resample`` as librosa 0.4
did, first 29 s):

1. exactly 348,000 samples: truncated, or a shorter clip tiled and truncated;
2. kapre's mel front end: an STFT done as a strided convolution (n_dft 512,
   hop 256, periodic Hann, 'same' border -> 1,360 frames), power, a Slaney mel
   filterbank (96 bands, 0-6,000 Hz), then ``10 log10(max(x, 1e-10))`` minus a
   reference maximum, floored at -80 dB;
3. five blocks Conv2D(32, 3x3, 'same') -> BatchNorm -> ELU -> MaxPool with pools
   (freq, time) (2,4), (3,4), (2,5), (2,4), (4,4): 96x1360 -> ... -> 1x1;
4. features: the global average of blocks 0-3's pooled outputs and the
   flattened 1x1 output of block 4, concatenated: 5 x 32 = 160, float32.

The original runs five networks (``conv_until`` = 0..4), each loaded from its
own file ``weights_layer{k}_theano.hdf5``. Those files hold identical values for
every layer they share (checked at load time), so one network whose blocks are
tapped gives exactly the five networks' outputs.

Theano ports. Keras 1 on Theano performs true convolution (``filter_flip``), for
the STFT kernels as well as the 3x3 kernels, so every kernel is flipped along
its spatial axes for PyTorch's cross-correlation. The STFT and mel kernels are
the stored ones (equal to kapre's formulas to float32 rounding).

Batch statistics (``choi_batch_stats``):

* ``"on"`` (default, the original): BatchNorm mode 2 normalises with the
  statistics of the batch at inference too (per channel over batch, frequency
  and time; biased variance; eps 1e-3), and the dB reference is the maximum
  over the whole batch. Features depend on the batch mates, so the folder runner
  rebuilds the original's batches: the sorted file list shuffled with Python 2's
  ``random.shuffle`` after ``random.seed(0)`` (:func:`py2_shuffle`), cut into
  chunks of 256, each chunk embedded as one batch (a file that cannot be
  decoded is left out of its batch; the original would have stopped). Memory
  stays bounded: the statistics are accumulated over sub-batches of
  :attr:`Choi.chunk` clips.
* ``"off"``: each file on its own. The dB reference is the file's own maximum
  (a batch of one), and BatchNorm uses the stored running statistics,
  ``(x - running_mean) / sqrt(running_var + 1e-3) * gamma + beta``. In the
  official files these are Keras's initial values (mean 0, variance 1 in the
  field Keras 1 calls ``running_std``): mode 2 never updates them. So this mode
  is a fixed per-channel affine map ``gamma / sqrt(1.001), beta`` rather than a
  normalisation; its features are batch independent but on a different scale
  from the network's training-time activations.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..assets import Asset, file_checksum
from ..device import torch_device
from ..errors import NotFoundError, UserError
from ..weights import Official
from .base import Representation

SAMPLE_RATE = 12_000
N_SAMPLES = 348_000  # 29 s at 12 kHz
N_DFT, HOP = 512, 256
N_FREQ, N_MELS = N_DFT // 2 + 1, 96
POOLS = ((2, 4), (3, 4), (2, 5), (2, 4), (4, 4))
N_BLOCKS, N_FILTERS = 5, 32
BN_EPS = 1e-3  # Keras 1.2 BatchNormalization default
AMIN, DYNAMIC_RANGE = 1e-10, 80.0
BATCH_STATS = ("on", "off")

COMMIT = "e1f83c389ff32ce48551f916414ae869cbe7f6e6"
WEIGHT_FILE = "weights_layer{}_theano.hdf5"
SHA256 = (
    "01ee963f6596a32063792d53312ccf5d719c2249134fb09de4408f8a54e00608",
    "93dd41457db750b3816f544764f1b5bfa201fe733e2e5477f326a038b306bb13",
    "5a17e00b20714dacf5bf8007c21dbb67fa5db47e878f197be131113b10aec025",
    "338f80c4c3242bb15a4172e89108f6785daf7893417d2ecbb45c08a2482228e2",
    "caf89f811415691fbb245be7eef394b9cebd787d7e3f78e29695972141cf2a08",
)
WEIGHT_BYTES = 1_329_264


def official() -> Official:
    """The five weight files of keunwoochoi/transfer_learning_music at commit e1f83c3, with sha256."""
    base = f"https://raw.githubusercontent.com/keunwoochoi/transfer_learning_music/{COMMIT}/weights_transfer/"
    mirror = f"https://cdn.jsdelivr.net/gh/keunwoochoi/transfer_learning_music@{COMMIT}/weights_transfer/"
    assets = [
        Asset(
            f"CHOI_WEIGHTS_LAYER{k}",
            f"models/choi/{WEIGHT_FILE.format(k)}",
            (base + WEIGHT_FILE.format(k), mirror + WEIGHT_FILE.format(k)),
            SHA256[k],
            WEIGHT_BYTES,
            mirror_path=f"weights/choi/{WEIGHT_FILE.format(k)}",
            hint="pass --weights FOLDER holding weights_layer0..4_theano.hdf5",
        )
        for k in range(N_BLOCKS)
    ]
    return Official("choi", tuple(assets))


def py2_shuffle(items: Sequence, seed: int = 0) -> list:
    """``items`` in the order Python 2.7's ``random.seed(seed); random.shuffle(items)`` leaves them.

    Python 2 draws ``j = int(random() * (i + 1))`` for i from n-1 down to 1;
    Python 3 draws ``j`` with ``_randbelow``, a different permutation. The
    Mersenne Twister stream of ``seed(0)`` is the same in both.
    """
    out = list(items)
    rng = random.Random(seed)
    for i in reversed(range(1, len(out))):
        j = int(rng.random() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


def fit_length(audio: np.ndarray, n_samples: int = N_SAMPLES) -> np.ndarray:
    """Exactly ``n_samples`` of a 1-D clip: truncated, or tiled (repeated) and truncated if shorter."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
    if len(audio) == 0:
        raise UserError("audio is empty (0 samples)")
    if len(audio) < n_samples:
        audio = np.tile(audio, -(-n_samples // len(audio)))
    return audio[:n_samples]


def theano_kernel(weight: np.ndarray) -> np.ndarray:
    """A Theano ``conv2d`` kernel (out, in, rows, cols) as the equivalent cross-correlation kernel.

    Theano flips the kernel along both spatial axes (true convolution); PyTorch
    does not, so the ported kernel is the stored one reversed along rows and cols.
    """
    return np.ascontiguousarray(weight[..., ::-1, ::-1])


def read_keras_weights(path: str | os.PathLike) -> dict:
    """Read one ``weights_layer{k}_theano.hdf5`` (Keras 1 ``save_weights`` layout).

    Returns ``{"stft_real", "stft_imag": (512, 1, 1, 257), "mel": (257, 96),
    "blocks": [{"W": (32, in, 3, 3), "b", "gamma", "beta", "mean", "var": (32,)}, ...]}``
    with arrays as stored (Theano kernel orientation). The nested ``ConvBNEluDr``
    model lists its trainable weights (W, b, gamma, beta per block) before the
    non-trainable ones (running mean and Keras 1's ``running_std``, which holds
    the variance); Keras loads them by position, and so does this.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            layers = {name.decode() for name in f.attrs["layer_names"]}
            if not {"melgram", "ConvBNEluDr"} <= layers:
                raise UserError(f"has layers {sorted(layers)}, expected 'melgram' and 'ConvBNEluDr'")
            stored = {}
            for layer in ("melgram", "ConvBNEluDr"):
                group = f[layer]
                stored[layer] = [
                    np.asarray(group[n.decode()][()], dtype=np.float32) for n in group.attrs["weight_names"]
                ]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not a Keras 1 choi weight file ({exc})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    mel, conv = stored["melgram"], stored["ConvBNEluDr"]
    n_blocks = len(conv) // 6
    if len(mel) != 3 or n_blocks == 0 or len(conv) != 6 * n_blocks:
        raise UserError(
            f"{path}: {len(mel)} melgram and {len(conv)} ConvBNEluDr weights do not form choi blocks"
        )
    blocks = []
    for i in range(n_blocks):
        w, b, gamma, beta = conv[4 * i : 4 * i + 4]
        mean, var = conv[4 * n_blocks + 2 * i : 4 * n_blocks + 2 * i + 2]
        blocks.append({"W": w, "b": b, "gamma": gamma, "beta": beta, "mean": mean, "var": var})
    weights = {"stft_real": mel[0], "stft_imag": mel[1], "mel": mel[2], "blocks": blocks}
    _check_shapes(path, weights)
    return weights


def _check_shapes(path: Path, weights: dict) -> None:
    expected = {
        "stft_real": (N_DFT, 1, 1, N_FREQ),
        "stft_imag": (N_DFT, 1, 1, N_FREQ),
        "mel": (N_FREQ, N_MELS),
    }
    problems = [f"{k} {weights[k].shape} != {v}" for k, v in expected.items() if weights[k].shape != v]
    for i, block in enumerate(weights["blocks"]):
        w_shape = (N_FILTERS, 1 if i == 0 else N_FILTERS, 3, 3)
        if block["W"].shape != w_shape:
            problems.append(f"block {i} kernel {block['W'].shape} != {w_shape}")
        problems += [
            f"block {i} {k} {block[k].shape}"
            for k in ("b", "gamma", "beta", "mean", "var")
            if block[k].shape != (N_FILTERS,)
        ]
    if problems:
        raise UserError(f"{path}: unexpected weight shapes: {'; '.join(problems)}")


def load_weights(folder: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Read the five weight files and check that they share their common layers.

    ``folder``: holds ``weights_layer{0..4}_theano.hdf5``; ``None`` downloads the
    official files (checksummed) into ``<cache>/models/choi``. Returns
    ``(weights of the deepest model, sha256 over the five files' digests)``.
    Raises ``ValueError`` if model k's file does not hold k+1 blocks, or if a
    layer differs between files (the single tapped network would then not be
    the original's five networks).
    """
    if folder is None:
        paths = official().fetch()
    else:
        folder = Path(folder)
        names = [WEIGHT_FILE.format(k) for k in range(N_BLOCKS)]
        if folder.is_file():
            if folder.name not in names:
                raise UserError(
                    f"{folder}: is a file; choi weights are the folder holding {names[0]} .. {names[-1]}"
                )
            folder = folder.parent  # one of the five files: the folder holds the others
        elif not folder.exists():
            raise NotFoundError(f"{folder}: no such folder of choi weights")
        paths = [folder / name for name in names]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise NotFoundError(f"{folder}: missing choi weight file(s) {', '.join(missing)}")
    models = [read_keras_weights(p) for p in paths]
    deepest = models[-1]
    for k, (path, model) in enumerate(zip(paths, models)):
        if len(model["blocks"]) != k + 1:
            raise UserError(
                f"{path}: holds {len(model['blocks'])} blocks, model conv_until={k} needs {k + 1}"
            )
        same = all(np.array_equal(model[n], deepest[n]) for n in ("stft_real", "stft_imag", "mel")) and all(
            np.array_equal(block[n], deepest["blocks"][i][n])
            for i, block in enumerate(model["blocks"])
            for n in block
        )
        if not same:
            raise UserError(
                f"{path}: its layers differ from {paths[-1].name}; the five choi models must share weights"
            )
    digest = hashlib.sha256("".join(file_checksum(p) for p in paths).encode()).hexdigest()
    return deepest, digest


class ChoiConvnet(nn.Module):
    """The network of all five models: mel front end and five conv blocks, in float32.

    ``forward(audio (B, 348000), batch_stats)`` -> ``(B, 160)``. Sub-batches of
    ``chunk`` clips bound the memory; the result does not depend on ``chunk``
    (up to float rounding in batch-statistics mode).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("stft_kernel", torch.zeros(2 * N_FREQ, 1, N_DFT))
        self.register_buffer("mel_basis", torch.zeros(N_FREQ, N_MELS))
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else N_FILTERS, N_FILTERS, 3, padding=1) for i in range(N_BLOCKS)
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(N_FILTERS, eps=BN_EPS) for _ in range(N_BLOCKS))

    @torch.no_grad()
    def load_keras(self, weights: dict) -> None:
        """Copy :func:`read_keras_weights` output in, flipping every Theano kernel."""

        def stft(kernel):  # (512, 1, 1, 257) 'tf' layout -> Theano (257, 1, 512, 1), flipped -> (257, 1, 512)
            return theano_kernel(kernel.transpose(3, 2, 0, 1))[..., 0]

        self.stft_kernel.copy_(
            torch.from_numpy(np.concatenate([stft(weights["stft_real"]), stft(weights["stft_imag"])]))
        )
        self.mel_basis.copy_(torch.from_numpy(weights["mel"]))
        for conv, norm, block in zip(self.convs, self.norms, weights["blocks"]):
            conv.weight.copy_(torch.from_numpy(theano_kernel(block["W"])))
            conv.bias.copy_(torch.from_numpy(block["b"]))
            norm.weight.copy_(torch.from_numpy(block["gamma"]))
            norm.bias.copy_(torch.from_numpy(block["beta"]))
            norm.running_mean.copy_(torch.from_numpy(block["mean"]))
            norm.running_var.copy_(torch.from_numpy(block["var"]))

    def decibels(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` samples -> ``(B, 1, 96, ceil(n/256))`` mel power in dB, before the reference is
        subtracted."""
        n_frames = -(-audio.shape[-1] // HOP)
        # Theano's 'half' border pads n_dft // 2 zeros on each side; 'same' keeps ceil(n / hop) frames.
        spec = F.conv1d(audio[:, None], self.stft_kernel, stride=HOP, padding=N_DFT // 2)[..., :n_frames]
        power = spec[:, :N_FREQ] ** 2 + spec[:, N_FREQ:] ** 2
        mel = torch.matmul(power.transpose(1, 2), self.mel_basis).transpose(1, 2)
        return (10 * torch.log(mel.clamp_min(AMIN)) / np.float32(math.log(10)))[:, None]

    def block(self, i: int, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """Block ``i`` (conv, BatchNorm with the given statistics, ELU, max-pool)."""
        norm = self.norms[i]
        y = F.batch_norm(self.convs[i](x), mean, var, norm.weight, norm.bias, training=False, eps=BN_EPS)
        return F.max_pool2d(F.elu(y), POOLS[i])

    def batch_moments(self, i: int, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and biased variance of block ``i``'s conv output over the whole batch.

        Sub-batch moments are merged with Chan et al.'s pairwise formula in float64.
        """
        count, mean, m2 = 0, None, None
        for start in range(0, len(x), chunk):
            y = self.convs[i](x[start : start + chunk])
            var_c, mean_c = torch.var_mean(y, dim=(0, 2, 3), correction=0)
            n = y.numel() // y.shape[1]
            mean_c, m2_c = mean_c.double(), var_c.double() * n
            if mean is None:
                count, mean, m2 = n, mean_c, m2_c
                continue
            delta, total = mean_c - mean, count + n
            mean = mean + delta * (n / total)
            m2 = m2 + m2_c + delta**2 * (count * n / total)
            count = total
        return mean.float(), (m2 / count).float()

    def forward(self, audio: torch.Tensor, batch_stats: bool = True, chunk: int = 16) -> torch.Tensor:
        db = torch.cat([self.decibels(audio[s : s + chunk]) for s in range(0, len(audio), chunk)])
        reference = db.amax() if batch_stats else db.amax(dim=(1, 2, 3), keepdim=True)
        x = (db - reference).clamp_min(-DYNAMIC_RANGE)
        features = []
        for i in range(N_BLOCKS):
            norm = self.norms[i]
            mean, var = (
                self.batch_moments(i, x, chunk) if batch_stats else (norm.running_mean, norm.running_var)
            )
            x = torch.cat([self.block(i, x[s : s + chunk], mean, var) for s in range(0, len(x), chunk)])
            features.append(x.mean(dim=(2, 3)) if i < N_BLOCKS - 1 else x.flatten(1))
        return torch.cat(features, dim=1)


class Choi(Representation):
    """The paper's choi representation (160-d). Build once, then ``rep.batch(audios)``.

    Args:
        choi_batch_stats: ``"on"`` (the original's batch-dependent features) or
            ``"off"`` (per file, stored running statistics); see the module docstring.
        device: torch device; default ``cuda`` when available, else ``cpu``.
        weights: a folder holding ``weights_layer{0..4}_theano.hdf5``; ``None``
            downloads the official files (commit e1f83c3, sha256-verified).
    """

    name = "choi"
    version = "1"
    sample_rate = SAMPLE_RATE
    normalize = False
    resampler = "fft"
    dim = 5 * N_FILTERS
    # The folder runner's batch-dependence protocol (representations.folder.batch_dependent): with batch
    # statistics each --batch_size chunk (default 256, the original's) of the shuffled list is one batch.
    batch_dependent = True
    default_batch_size = 256

    def __init__(
        self,
        choi_batch_stats: str = "on",
        device: str | None = None,
        weights: str | os.PathLike | None = None,
    ):
        if choi_batch_stats not in BATCH_STATS:
            raise UserError(f"choi_batch_stats must be 'on' or 'off', got {choi_batch_stats!r}")
        self.batch_stats = choi_batch_stats
        self.batch_dependent = choi_batch_stats == "on"
        self.device = torch_device(device)
        self.chunk = 64 if self.device.type == "cuda" else 16  # clips per sub-batch (memory only)
        self.preferred_batch = self.chunk
        state, self.weights_id = load_weights(weights)
        self.net = ChoiConvnet()
        self.net.load_keras(state)
        self.net.to(self.device).eval()

    def options(self) -> dict:
        return {"choi_batch_stats": self.batch_stats, "weights": self.weights_id}

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode the first 29 s at 12 kHz (FFT resampling, no normalisation); length is fixed in
        :meth:`batch`."""
        from ..audio import load_audio

        return load_audio(
            path, SAMPLE_RATE, normalize=False, resampler="fft", duration=N_SAMPLES / SAMPLE_RATE
        )

    def order_files(self, paths: Sequence) -> list:
        """With batch statistics, the original's order: the sorted list shuffled by :func:`py2_shuffle`."""
        return py2_shuffle(paths) if self.batch_dependent else list(paths)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at 12 kHz -> ``(160,)`` float32 (with batch statistics: a batch of one)."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips at 12 kHz -> a ``(160,)`` float32 per clip.

        With ``choi_batch_stats="on"`` the clips form one batch (BatchNorm
        statistics and dB reference shared); with ``"off"`` each is independent.
        """
        if not audios:
            return []
        clips = np.stack([fit_length(a) for a in audios])
        # float32 as Theano computed it: no TF32 in cuDNN convolutions (on by default).
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            audio = torch.from_numpy(clips).to(self.device)
            features = self.net(audio, batch_stats=self.batch_dependent, chunk=self.chunk)
        return list(features.cpu().numpy().astype(np.float32))
