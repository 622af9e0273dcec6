"""Hand-crafted baselines: chroma (72-d) and MFCC (120-d), as the original (REFERENCE 7.1).

Audio: 22,050 Hz mono (resampy ``kaiser_best``), peak-normalised. Frames, hop
512, by ``handcrafted_librosa``:

* ``"0.8.1"`` (default, the original's): librosa 0.8.1's ``chroma_cqt`` /
  ``mfcc`` with that version's defaults, re-implemented in
  :mod:`jukemir.representations.librosa081` (equal to librosa 0.8.1 to float32
  rounding, whatever librosa is installed);
* ``"installed"``: ``librosa.feature.chroma_cqt`` / ``librosa.feature.mfcc``
  of the installed librosa with its own defaults (zero padding, another CQT);
  its version is recorded in the outputs' provenance.

Summary: for the features themselves and their first and second time
differences, the per-coefficient mean and population std, in the order
``[mean(d0), std(d0), mean(d1), std(d1), mean(d2), std(d2)]``.
"""

from __future__ import annotations

import numpy as np

from . import librosa081
from .base import Representation

SAMPLE_RATE = 22050
HOP_LENGTH = 512
LIBROSA_MODES = ("0.8.1", "installed")  # the original's librosa (re-implemented), or the installed one


def delta_statistics(frames: np.ndarray) -> np.ndarray:
    """Summarise ``(n_coeffs, n_frames)`` features as a ``6 * n_coeffs`` float32 vector.

    Order: mean and std (ddof 0) over time of ``np.diff(frames, n=i, axis=1)``
    for i = 0, 1, 2. Needs at least 3 frames.
    """
    if frames.ndim != 2 or frames.shape[1] < 3:
        raise ValueError(f"need (coefficients, frames>=3) features, got shape {frames.shape}")
    stats = []
    for order in (0, 1, 2):
        diff = np.diff(frames, n=order, axis=1)
        stats.extend([diff.mean(axis=1), diff.std(axis=1)])
    return np.concatenate(stats).astype(np.float32)


class _Handcrafted(Representation):
    version = "2"  # 2: librosa 0.8.1's computation by default (1: the installed librosa's defaults)
    sample_rate = SAMPLE_RATE
    normalize = True
    n_coeffs = 0

    def __init__(self, device: str | None = None, handcrafted_librosa: str = "0.8.1"):
        """``handcrafted_librosa``: ``"0.8.1"`` (the original's computation) or ``"installed"``."""
        del device  # computed on the CPU by librosa; accepted so every representation takes --device
        if handcrafted_librosa not in LIBROSA_MODES:
            raise ValueError(
                f"handcrafted_librosa must be '0.8.1' (the original's) or 'installed', got {handcrafted_librosa!r}"
            )
        self.handcrafted_librosa = handcrafted_librosa

    def options(self) -> dict:
        options = {"handcrafted_librosa": self.handcrafted_librosa}
        if self.handcrafted_librosa == "installed":
            import librosa

            options["librosa"] = librosa.__version__  # its defaults change between versions
        return options

    def frames(self, audio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """``audio``: mono float32 at 22,050 Hz (peak-normalised by :meth:`load`)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"expected mono audio of shape (n,), got {audio.shape}")
        if len(audio) < 3 * HOP_LENGTH:
            raise ValueError(f"audio too short: {len(audio)} samples, need at least {3 * HOP_LENGTH}")
        return delta_statistics(self.frames(audio))


class Chroma(_Handcrafted):
    """72-d: statistics of the 12-bin constant-Q chromagram (``chroma_cqt``, hop 512)."""

    name = "chroma"
    dim = 72

    def frames(self, audio):
        if self.handcrafted_librosa == "0.8.1":
            return librosa081.chroma_cqt(audio, SAMPLE_RATE, HOP_LENGTH)
        import librosa

        return librosa.feature.chroma_cqt(y=audio, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)


class MFCC(_Handcrafted):
    """120-d: statistics of 20 MFCCs (128 Slaney mels, n_fft 2048, hop 512, top_db 80)."""

    name = "mfcc"
    dim = 120

    def frames(self, audio):
        if self.handcrafted_librosa == "0.8.1":
            return librosa081.mfcc(audio, SAMPLE_RATE, HOP_LENGTH)
        import librosa

        return librosa.feature.mfcc(y=audio, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
