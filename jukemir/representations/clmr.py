"""clmr: 512-d features of the CLMR SampleCNN encoder (docs/fidelity/clmr.md).

Per clip (mono, 22,050 Hz, resampy ``kaiser_best``, no normalisation):

1. cut into frames of ``clmr_frame`` samples;
2. each frame through the SampleCNN encoder (BatchNorm with its running
   statistics; the projection head and classifier are not used) -> 512;
3. the mean over the frames -> 512, float32.

Framing rule, by ``clmr_frame``:

* ``59409`` (default, the paper's): the original's ``torch.split`` into chunks
  of 59,409 samples and **drops the last chunk whatever its length**, so a clip
  of exactly k x 59,409 samples loses a full frame. ``ValueError("audio too
  short")`` when there is at most one chunk (<= 59,409 samples). 59,409 is a
  typo for 3^10 = 59,049 that still yields one output step per frame, because
  SampleCNN floors at every pooling.
* ``59049`` (corrected, SampleCNN's native input length 3^10): every full frame
  is kept and only a partial remainder is dropped. ``ValueError`` when there is
  no full frame (< 59,049 samples).

Weights: the official PyTorch Lightning checkpoint ``clmr_epoch=10000.ckpt``
from the release asset ``clmr_magnatagatune_mlp.zip`` (CLMR release 2.1). Its
``state_dict`` holds the encoder twice (``encoder.*`` and, through SimCLR,
``model.encoder.*``) plus the projector; as the original's
``load_encoder_checkpoint``, the keys containing ``model.encoder.`` are kept
with that prefix removed, and they must then match the encoder exactly (no key
missing or unexpected, same shapes). ``fc.*`` keys are dropped: the original
replaces ``fc`` with the identity. The checkpoint is read without
PyTorch Lightning (:mod:`jukemir.checkpoints`): foreign classes in it
(hyper-parameters, callback states) become inert placeholders and no code from
the file runs.

No checksum of the release asset is published, so it is trusted on first use:
after the first download its sha256 and size are recorded in
``<cache>/models/clmr/sha256.json``, and every later retrieval is verified
against that record.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..assets import Asset, file_checksum, unpack
from ..checkpoints import TorchCheckpoint, tensors_of
from ..device import torch_device
from ..errors import NotFoundError, UserError
from ..weights import Official, check_keys
from .base import Representation

SAMPLE_RATE = 22_050
PAPER_FRAME, CORRECTED_FRAME = 59_409, 59_049
FRAMES = (PAPER_FRAME, CORRECTED_FRAME)
HIDDEN = (
    (128, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 512),
)
RELEASE_URL = "https://github.com/Spijkervet/CLMR/releases/download/2.1/clmr_magnatagatune_mlp.zip"
CHECKPOINT = "clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt"
ENCODER_PREFIX = "model.encoder."


class SampleCNN(nn.Module):
    """CLMR's ``SampleCNN(strides=[3]*9)`` encoder without its ``fc`` (replaced by the identity).

    ``(B, 1, L)`` samples -> ``(B, 512 * T)``; T = floor(L / 3^10), so 1 for
    59,049 <= L < 118,098. Parameter names match CLMR's (``sequential.{i}.{0,1}``).
    """

    def __init__(self):
        super().__init__()
        layers = [nn.Sequential(nn.Conv1d(1, 128, kernel_size=3, stride=3), nn.BatchNorm1d(128), nn.ReLU())]
        for c_in, c_out in HIDDEN:
            layers.append(
                nn.Sequential(
                    nn.Conv1d(c_in, c_out, kernel_size=3, padding=1),
                    nn.BatchNorm1d(c_out),
                    nn.ReLU(),
                    nn.MaxPool1d(3),
                )
            )
        layers.append(
            nn.Sequential(nn.Conv1d(512, 512, kernel_size=3, padding=1), nn.BatchNorm1d(512), nn.ReLU())
        )
        self.sequential = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sequential(x).flatten(1)


def frame_audio(audio: np.ndarray, frame: int = PAPER_FRAME) -> np.ndarray:
    """Cut a 1-D clip into ``(n_frames, frame)`` by the rule of ``frame`` (see the module docstring)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
    if frame not in FRAMES:
        raise UserError(
            f"clmr_frame must be {PAPER_FRAME} (the paper's) or {CORRECTED_FRAME} (corrected), got {frame}"
        )
    if frame == PAPER_FRAME:
        n_frames = -(-len(audio) // frame) - 1  # every torch.split chunk but the last
        need = f"more than {frame} samples"
    else:
        n_frames = len(audio) // frame
        need = f"at least {frame} samples"
    if n_frames < 1:
        raise UserError(
            f"audio too short: {len(audio)} samples ({len(audio) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz); "
            f"clmr with frame {frame} needs {need}"
        )
    return audio[: n_frames * frame].reshape(n_frames, frame)


# ---------------------------------------------------------------- checkpoint


def read_encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder's state dict from a CLMR checkpoint, keys as :class:`SampleCNN` names them.

    A Lightning checkpoint (a dict with ``pytorch-lightning_version`` and
    ``state_dict``) gives its ``model.encoder.*`` keys; a plain state dict its
    ``encoder.*`` keys (the original's two cases). ``fc.*`` keys are dropped.
    The file is read by :class:`jukemir.checkpoints.TorchCheckpoint`: Lightning's
    classes in it become inert placeholders and no code from it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such CLMR checkpoint")
    with TorchCheckpoint(path) as checkpoint:
        obj = checkpoint.obj
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            raise UserError(f"{path}: expected a dict (a Lightning checkpoint or a state dict), got {kind}")
        if "pytorch-lightning_version" in obj:
            state, prefix = obj.get("state_dict"), ENCODER_PREFIX
            if not isinstance(state, dict):
                raise UserError(f"{path}: Lightning checkpoint without a 'state_dict'")
        else:
            state, prefix = obj, "encoder."
        encoder = {k.replace(prefix, ""): ref for k, ref in tensors_of(state).items() if prefix in k}
        if not encoder:
            raise UserError(f"{path}: no '{prefix}*' tensors; not a CLMR encoder checkpoint")
        return checkpoint.load({k: ref for k, ref in encoder.items() if not k.startswith("fc.")})


def official() -> Official:
    """The release asset ``clmr_magnatagatune_mlp.zip`` (no published checksum: trusted on first use)."""
    asset = Asset(
        "CLMR_MAGNATAGATUNE_MLP",
        "models/clmr/clmr_magnatagatune_mlp.zip",
        (RELEASE_URL,),
        mirror_path="weights/clmr/clmr_magnatagatune_mlp.zip",
        hint="pass --weights /path/to/clmr_epoch=10000.ckpt",
    )
    return Official("clmr", (asset,))


def official_checkpoint(mirror: str | None = None) -> Path:
    """Download (or find) the release asset, verify it against the trust-on-first-use record, unpack it.

    Returns ``<cache>/models/clmr/clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt``.
    Raises :class:`jukemir.assets.DownloadError` (``ChecksumError`` when the
    file no longer matches the recorded sha256).
    """
    weights = official()
    (archive,) = weights.fetch(mirror)
    ckpt = unpack(archive, weights.folder) / CHECKPOINT
    if not ckpt.is_file():
        raise NotFoundError(f"{archive}: has no {CHECKPOINT}")
    return ckpt


def load_encoder(path: str | os.PathLike) -> SampleCNN:
    """A :class:`SampleCNN` in eval mode with the checkpoint's weights, loaded strictly."""
    state = read_encoder_state(path)
    encoder = SampleCNN()
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    check_keys({k: tuple(v.shape) for k, v in state.items()}, expected, str(path))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


class CLMR(Representation):
    """The paper's CLMR representation (512-d). Build once, then ``rep(audio)`` or ``rep.batch(audios)``.

    Args:
        clmr_frame: 59409 (the paper's framing) or 59049 (corrected); see the module docstring.
        device: torch device; default ``cuda`` when available, else ``cpu``.
        weights: a CLMR checkpoint (``.ckpt``, Lightning format); ``None``
            downloads the official one.
    """

    name = "clmr"
    version = "1"
    sample_rate = SAMPLE_RATE
    normalize = False
    resampler = "kaiser_best"
    dim = 512

    def __init__(
        self,
        clmr_frame: int = PAPER_FRAME,
        device: str | None = None,
        weights: str | os.PathLike | None = None,
    ):
        if clmr_frame not in FRAMES:
            raise UserError(
                f"clmr_frame must be {PAPER_FRAME} (the paper's) or {CORRECTED_FRAME} (corrected), "
                f"got {clmr_frame}"
            )
        self.frame = int(clmr_frame)
        self.device = torch_device(device)
        self.frames_per_forward = 256 if self.device.type == "cuda" else 32
        self.preferred_batch = 8
        path = official_checkpoint() if weights is None else Path(weights)
        self.encoder = load_encoder(path).to(self.device)
        self.weights_id = file_checksum(path)

    def options(self) -> dict:
        return {"clmr_frame": self.frame, "weights": self.weights_id}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at 22,050 Hz -> ``(512,)`` float32."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips at 22,050 Hz -> a ``(512,)`` float32 per clip, independent of the batch.

        The frames of all clips go through the encoder together,
        :attr:`frames_per_forward` at a time.
        """
        framed = [frame_audio(a, self.frame) for a in audios]
        if not framed:
            return []
        frames = torch.from_numpy(np.concatenate(framed))
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            out = torch.cat(
                [
                    self.encoder(frames[s : s + self.frames_per_forward, None].to(self.device))
                    for s in range(0, len(frames), self.frames_per_forward)
                ]
            )
            means = [chunk.mean(dim=0) for chunk in out.split([len(f) for f in framed])]
        return [m.cpu().numpy().astype(np.float32) for m in means]
