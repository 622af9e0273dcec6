"""Hand-crafted baselines: chroma (72-d) and MFCC (120-d), as the original (docs/fidelity/chroma.md, mfcc.md).

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

import inspect
import sys
import threading
from collections import OrderedDict

import numpy as np

from ..audio import AudioError, audio_info
from ..device import torch_device
from ..errors import UserError
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
        raise UserError(f"need (coefficients, frames>=3) features, got shape {frames.shape}")
    stats = []
    for order in (0, 1, 2):
        diff = np.diff(frames, n=order, axis=1)
        stats.extend([diff.mean(axis=1), diff.std(axis=1)])
    return np.concatenate(stats).astype(np.float32)


_FILTER_BANKS = 256  # CQT filter banks kept (one per octave and tuning; a few hundred KiB each)


def memoize_cqt_filters() -> None:
    """Keep the constant-Q filter banks librosa builds, instead of rebuilding them for every clip.

    ``librosa.cqt`` designs its filters anew on each call (about 70 % of
    ``chroma_cqt``'s time on a 3 s clip), although they depend only on the
    sample rate, the (tuning-corrected) frequencies and fixed options. This
    wraps librosa's private filter builder in a bounded cache keyed on all of
    its arguments, handing out copies (``cqt`` scales them in place), so every
    output is bit for bit librosa's. Without that private function (another
    librosa) nothing changes.
    """
    from librosa.core import constantq

    name = "__vqt_filter_fft"
    build = getattr(constantq, name, None)
    if build is None or getattr(build, "jukemir_memo", False):
        return
    signature = inspect.signature(build)
    banks: OrderedDict = OrderedDict()
    lock = threading.Lock()

    def key_of(value):
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, type):
            return np.dtype(value).str
        return repr(value)

    def memo(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        key = tuple((k, key_of(v)) for k, v in sorted(bound.arguments.items()))
        with lock:
            hit = banks.get(key)
            if hit is not None:
                banks.move_to_end(key)
        if hit is None:
            hit = build(*args, **kwargs)
            with lock:
                banks[key] = hit
                while len(banks) > _FILTER_BANKS:
                    banks.popitem(last=False)
        basis, n_fft, lengths = hit
        return basis.copy(), n_fft, np.array(lengths, copy=True)

    memo.jukemir_memo = True
    memo.original = build
    setattr(constantq, name, memo)


# Memory grows with the clip: decoding and resampling a 44.1 kHz stereo file and the chromagram or MFCC
# frames take about 4.5 GB per hour of audio at the peak (measured: 10 min took 760 MB above the process's
# own). Longer files are refused before decoding unless the limit is raised.
MAX_SECONDS = 30 * 60.0
GB_PER_HOUR = 4.5


class _Handcrafted(Representation):
    version = "2"  # 2: librosa 0.8.1's computation by default (1: the installed librosa's defaults)
    sample_rate = SAMPLE_RATE
    normalize = True
    n_coeffs = 0

    def __init__(
        self, device: str | None = None, handcrafted_librosa: str = "0.8.1", max_seconds: float = MAX_SECONDS
    ):
        """``device`` is checked like every representation's, but librosa computes on the CPU.

        ``handcrafted_librosa``: ``"0.8.1"`` (the original's computation) or ``"installed"``.
        ``max_seconds``: longer files are refused before they are decoded (see :data:`MAX_SECONDS`).
        """
        if not max_seconds > 0:
            raise UserError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
        self.max_seconds = float(max_seconds)
        if handcrafted_librosa not in LIBROSA_MODES:
            raise UserError(
                "handcrafted_librosa must be '0.8.1' (the original's) or 'installed', "
                f"got {handcrafted_librosa!r}"
            )
        if torch_device(device or "cpu").type != "cpu":
            print(
                f"jukemir: {self.name} is computed on the CPU (librosa); --device {device} is ignored",
                file=sys.stderr,
            )
        self.handcrafted_librosa = handcrafted_librosa

    def options(self) -> dict:
        options = {"handcrafted_librosa": self.handcrafted_librosa}
        if self.handcrafted_librosa == "installed":
            import librosa

            options["librosa"] = librosa.__version__  # its defaults change between versions
        return options

    def load(self, path) -> np.ndarray:
        """Decode ``path`` (22,050 Hz mono, peak-normalised), refusing files longer than ``max_seconds``."""
        seconds = audio_info(path)[2]
        if seconds > self.max_seconds:
            raise AudioError(
                path,
                f"{seconds / 60:.1f} min of audio is longer than "
                f"{self.name}'s limit of {self.max_seconds / 60:g} min "
                f"(its features hold the whole clip in memory, about {GB_PER_HOUR:g} GB per hour); "
                "raise the limit with --max-seconds",
            )
        return super().load(path)

    def frames(self, audio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """``audio``: mono float32 at 22,050 Hz (peak-normalised by :meth:`load`)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
        if len(audio) < 3 * HOP_LENGTH:
            raise UserError(f"audio too short: {len(audio)} samples, need at least {3 * HOP_LENGTH}")
        return delta_statistics(self.frames(audio))


class Chroma(_Handcrafted):
    """72-d: statistics of the 12-bin constant-Q chromagram (``chroma_cqt``, hop 512)."""

    name = "chroma"
    dim = 72

    def __init__(
        self, device: str | None = None, handcrafted_librosa: str = "0.8.1", max_seconds: float = MAX_SECONDS
    ):
        super().__init__(device, handcrafted_librosa, max_seconds)
        if handcrafted_librosa == "installed":
            memoize_cqt_filters()

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
