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

(``kaiser_best`` is resampy's filter, librosa 0.7/0.8's default, computed by
:mod:`jukemir.sinc` with the numbers of the resampy generation asked for
(``resampy``, default :data:`RESAMPY_VERSION`) and librosa's length
``ceil(n * ratio)``; ``fft`` is ``scipy.signal.resample`` as in librosa 0.4,
fixed to ``ceil(n * ratio)`` samples.) No resampling happens when the file is
already at the target rate.

The original containers ran resampy 0.2.2, whose ``kaiser_best`` is another
filter (64 zero crossings, roll-off 0.9476) than resampy >= 0.3's (50, 0.9173):
on the example MTT clip resampled 16 -> 22.05 kHz the two differ by up to 0.011
(RMS 7.6e-4), which moves mfcc by 0.6 %. The default, ``"0.2"``, is therefore
the original's; ``"0.4"`` gives what ``librosa.resample(...,
res_type="kaiser_best")`` gives with today's resampy.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np

from .errors import UserError

RESAMPLERS = ("kaiser_best", "kaiser_fast", "fft", "soxr_hq")
RESAMPY_VERSION = (
    "0.2"  # whose kaiser_best/kaiser_fast numbers: "0.2" (the originals') or "0.4" (resampy >= 0.3)
)
_IMPORT_LOCK = threading.Lock()  # decoding threads must not race on librosa's lazy imports


class AudioError(UserError):
    """A file that cannot be used as audio. ``str()`` is one line: ``<file>: <reason>``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the decoder said
        super().__init__(f"{self.path}: {self.reason}")


def resample(
    audio: np.ndarray,
    orig_sr: int,
    target_sr: int,
    resampler: str = "kaiser_best",
    resampy: str = RESAMPY_VERSION,
) -> np.ndarray:
    """Resample a 1-D float32 signal from ``orig_sr`` to ``target_sr`` Hz with ``resampler``.

    ``resampy``: the resampy generation whose numbers ``kaiser_best``/``kaiser_fast`` give ("0.2" or "0.4").
    """
    if resampler not in RESAMPLERS:
        raise UserError(f"unknown resampler {resampler!r}; expected one of {RESAMPLERS}")
    if orig_sr == target_sr:
        return audio
    if resampler == "fft":
        import scipy.signal

        n_out = int(math.ceil(len(audio) * float(target_sr) / orig_sr))
        out = scipy.signal.resample(audio, n_out)
    elif resampler in ("kaiser_best", "kaiser_fast"):
        from .sinc import resample as sinc_resample

        out = sinc_resample(audio, orig_sr, target_sr, resampler, version=resampy)
    else:
        with _IMPORT_LOCK:
            import librosa
            import soxr  # noqa: F401 - imported fully before any thread uses it

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
    resampy: str = RESAMPY_VERSION,
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

    path = _readable_file(path)
    if sample_rate is not None and (not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0):
        raise UserError(f"sample_rate must be a positive int, got {sample_rate!r}")
    try:
        with sf.SoundFile(os.fsencode(path)) as f:
            native_sr = f.samplerate
            start = int(round(offset * native_sr))
            if start:
                f.seek(min(start, f.frames))
            frames = -1 if duration is None else int(round(duration * native_sr))
            data = _read_frames(f, frames, downmix=mono)
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
    audio = data if mono else data.T  # (n,) already mixed down, or (channels, n)
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if sample_rate is not None and sample_rate != native_sr:
        if mono:
            audio = resample(audio, native_sr, int(sample_rate), resampler, resampy)
        else:
            audio = np.stack([resample(ch, native_sr, int(sample_rate), resampler, resampy) for ch in audio])
    if normalize:
        audio = peak_normalize(audio)
    return audio.astype(np.float32, copy=False)


def peak_normalize(audio: np.ndarray) -> np.ndarray:
    """``audio`` divided by its peak absolute value when that is > 0 (else unchanged)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio / peak if peak > 0 else audio


def _decoder_reason(path: Path, exc: Exception) -> str:
    """What libsndfile said, without its misleading parts.

    libsndfile reports a file it opened but could not parse (a corrupt MP3, say)
    as "File does not exist or is not a regular file"; the loader has checked
    both already, so that text is replaced by what it means. The file name it
    repeats is dropped (the error names the file once).
    """
    text = " ".join(str(exc).split())
    for shown in (repr(str(path)), repr(os.fsencode(path)), f"'{path}'"):
        text = text.replace(f"Error opening {shown}: ", "")
    if "does not exist or is not a regular file" in text:
        return "no audio format or audio data recognised in it"
    return text


def _read_frames(f, frames: int, downmix: bool = False) -> np.ndarray:
    """Read ``frames`` frames (-1: to the end) of an open SoundFile as float32 ``(n, channels)``.

    Block by block, because a corrupt header can claim billions of frames and a
    single read allocates the claimed length up front. ``downmix``: average the
    channels of each block as it is read and return ``(n,)``, so a long
    multichannel file never sits in memory with all its channels (the same
    values as averaging afterwards: each sample's channels are summed in the
    same order).
    """
    block = max(1, (1 << 22) // max(1, f.channels))  # at most 16 MiB per read
    chunks = []
    while frames != 0:
        chunk = f.read(block if frames < 0 else min(block, frames), dtype="float32", always_2d=True)
        if not len(chunk):
            break
        frames -= len(chunk) if frames > 0 else 0
        if downmix:
            chunk = np.ascontiguousarray(chunk.T.mean(axis=0), dtype=np.float32)
        chunks.append(chunk)
    if not chunks:
        return np.zeros(0 if downmix else (0, f.channels), np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _readable_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a non-empty regular file this process can read, else AudioError saying why."""
    path = Path(path)
    if not path.exists():
        raise AudioError(
            path, f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "no such file"
        )
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
    return path


def audio_info(path: str | os.PathLike) -> tuple[int, int, float]:
    """Return ``(sample_rate, channels, duration_seconds)`` without decoding, or raise AudioError."""
    import soundfile as sf

    path = _readable_file(path)
    try:
        info = sf.info(os.fsencode(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(path, f"cannot decode as audio ({_decoder_reason(path, exc)})") from None
    return info.samplerate, info.channels, info.duration
