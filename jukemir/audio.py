"""THE audio loader: decode, downmix to mono, resample, peak-normalise.

Every part of jukemir that reads audio calls :func:`load_audio`. What the
original representations did, and so what each one asks for here:

==============  ===========  ==================  ===============
representation  sample rate  resampler           peak-normalised
==============  ===========  ==================  ===============
chroma, mfcc    22,050 Hz    ``kaiser_best``     yes
musicnn         16,000 Hz    ``kaiser_best``     no
clmr            22,050 Hz    ``kaiser_best``     no
jukebox         44,100 Hz    ``kaiser_best``     yes
choi            12,000 Hz    ``fft``             no
==============  ===========  ==================  ===============

(``kaiser_best`` is resampy's filter, librosa 0.7/0.8's default; ``fft`` is
``scipy.signal.resample`` as in librosa 0.4, fixed to ``ceil(n * ratio)``
samples.) No resampling happens when the file is already at the target rate.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from .errors import UserError

RESAMPLERS = ("kaiser_best", "kaiser_fast", "fft", "soxr_hq")
_IMPORT_LOCK = threading.Lock()  # decoding threads must not race on librosa's lazy imports


class AudioError(UserError):
    """A file that cannot be used as audio. ``str()`` is one line: ``<file>: <reason>``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"{self.path}: {self.reason}")


def resample(audio: np.ndarray, orig_sr: int, target_sr: int, resampler: str = "kaiser_best") -> np.ndarray:
    """Resample a 1-D float32 signal from ``orig_sr`` to ``target_sr`` Hz with ``resampler``."""
    if resampler not in RESAMPLERS:
        raise UserError(f"unknown resampler {resampler!r}; expected one of {RESAMPLERS}")
    if orig_sr == target_sr:
        return audio
    if resampler == "fft":
        import scipy.signal

        n_out = int(math.ceil(len(audio) * float(target_sr) / orig_sr))
        out = scipy.signal.resample(audio, n_out)
    else:
        with _IMPORT_LOCK:
            import librosa
            import resampy  # noqa: F401 - imported fully before any thread uses it
            import soxr  # noqa: F401

        out = librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type=resampler)
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    normalize: bool = False,
    resampler: str = "kaiser_best",
    offset: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Load an audio file as float32 samples in [-1, 1].

    Args:
        path: a wav/flac/ogg/mp3 (anything libsndfile decodes).
        sample_rate: target rate in Hz; ``None`` keeps the file's rate.
        mono: average the channels (shape ``(n,)``); else shape ``(channels, n)``.
        normalize: divide by the peak absolute value when it is > 0.
        resampler: one of :data:`RESAMPLERS` (see the module table).
        offset, duration: seconds to skip, and seconds to keep (``None``: to the end),
            counted at the file's own rate before resampling.

    Raises:
        AudioError: missing, unreadable, empty, non-audio or non-finite input (or
            a broken link, FIFO or device), with the file name and the reason on one line.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(path, f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not path.is_file():  # opening a FIFO would block
        raise AudioError(path, "not a regular file (a FIFO, socket or device)")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb"):  # libsndfile reports an unreadable file as a "System error"
            pass
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    if sample_rate is not None and (not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0):
        raise UserError(f"sample_rate must be a positive int, got {sample_rate!r}")
    try:
        with sf.SoundFile(str(path)) as f:
            native_sr = f.samplerate
            start = int(round(offset * native_sr))
            if start:
                f.seek(min(start, f.frames))
            frames = -1 if duration is None else int(round(duration * native_sr))
            data = _read_frames(f, frames)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise AudioError(path, f"cannot decode as audio ({_decoder_reason(path, exc)})") from None
    except MemoryError:
        raise AudioError(path, "too large to decode in memory") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise AudioError(path, "contains no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(path, "contains NaN or infinite samples")
    audio = data.T  # (channels, n)
    if mono:
        audio = audio.mean(axis=0)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if sample_rate is not None and sample_rate != native_sr:
        if mono:
            audio = resample(audio, native_sr, int(sample_rate), resampler)
        else:
            audio = np.stack([resample(ch, native_sr, int(sample_rate), resampler) for ch in audio])
    if normalize:
        peak = float(np.max(np.abs(audio)))
        if peak > 0:
            audio = audio / peak
    return audio.astype(np.float32, copy=False)


def _decoder_reason(path: Path, exc: Exception) -> str:
    """What libsndfile said, without its misleading parts.

    libsndfile reports a file it opened but could not parse (a corrupt MP3, say)
    as "File does not exist or is not a regular file"; the loader has checked
    both already, so that text is replaced by what it means. The file name it
    repeats is dropped (the error names the file once).
    """
    text = " ".join(str(exc).split())
    text = text.replace(f"Error opening {str(path)!r}: ", "").replace(f"Error opening '{path}': ", "")
    if "does not exist or is not a regular file" in text:
        return "no audio format or audio data recognised in it"
    return text


def _read_frames(f, frames: int) -> np.ndarray:
    """Read ``frames`` frames (-1: to the end) of an open SoundFile as float32 ``(n, channels)``.

    Block by block, because a corrupt header can claim billions of frames and a
    single read allocates the claimed length up front.
    """
    block = max(1, (1 << 22) // max(1, f.channels))  # at most 16 MiB per read
    chunks = []
    while frames != 0:
        chunk = f.read(block if frames < 0 else min(block, frames), dtype="float32", always_2d=True)
        if not len(chunk):
            break
        chunks.append(chunk)
        frames -= len(chunk) if frames > 0 else 0
    return np.concatenate(chunks) if chunks else np.zeros((0, f.channels), np.float32)


def audio_info(path: str | os.PathLike) -> tuple[int, int, float]:
    """Return ``(sample_rate, channels, duration_seconds)`` without decoding, or raise AudioError."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(path, f"cannot decode as audio ({_decoder_reason(path, exc)})") from None
    return info.samplerate, info.channels, info.duration
