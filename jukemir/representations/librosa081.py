"""librosa 0.8.1's ``chroma_cqt`` and ``mfcc``, the original's, written anew on numpy and scipy.

The original computed ``librosa.feature.chroma_cqt(y, sr=22050, hop_length=512)``
with librosa 0.8.1, numpy 1.x and resampy 0.2 (docs/fidelity/chroma.md).
librosa >= 0.10 computes another constant-Q transform (wavelet filters, soxr
resampling, zero padding, another tuning estimator) and resampy >= 0.3 ships
other filters, so today's ``chroma_cqt`` drifts from the original's by up to
about 0.2 in the 72 statistics (:func:`mfcc`, simpler, is at the end). This
module follows the path librosa 0.8.1 took for that call, step by step and in
the same floating-point types:

1. **Tuning** (:func:`estimate_tuning`): peaks of a Hann STFT (n_fft 2048, hop
   512, reflect-padded), refined by parabolic interpolation, between 150 and
   4000 Hz and above a tenth of their frame's maximum; the peaks at or above
   the median peak magnitude vote in a histogram of their deviation from the
   36-bins-per-octave grid, at 0.01-bin resolution.
2. **CQT** (:func:`cqt`): 7 octaves of 36 bins from C1 shifted by the tuning.
   Octave by octave from the top: the 36 Hann-windowed complex exponentials
   (L1-normalised, scaled by length / n_fft), Fourier-transformed, sparsified to
   keep 99 % of each row's L1 mass, scaled by sqrt(2^octave) and applied to a
   rectangular-window STFT (n_fft 1024, reflect padding); then the signal is
   halved in rate with resampy 0.2's ``kaiser_fast`` filter (rescaled by
   sqrt 2) and the hop halved. Every bin is finally divided by the square root
   of its filter length.
3. **Chroma** (:func:`chroma_cqt`): the CQT magnitude folded onto 12 pitch
   classes (3 bins each, centred on the note), each frame divided by its maximum.

numpy 1.x multiplied a float32 array by a float64 *scalar* in single precision
(value-based casting); numpy 2 does it in double. Where librosa 0.8.1 did that,
the scalar is cast to float32 here, so the result is the same under both.
Tuning, STFTs, filters, resampling and the CQT equal librosa 0.8.1's bit for
bit (tools/make_handcrafted_reference.py checks it); the final fold and
normalisation go through BLAS, so chroma matches to float32 rounding.

Only configurations that take the branches of ``sr=22050, hop_length=512``
(what chroma uses) are implemented; others raise ``ValueError``.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np
import scipy.signal
import scipy.sparse

BINS_PER_OCTAVE = 36
N_OCTAVES = 7
C1_HZ = 440.0 * 2.0 ** ((24 - 69.0) / 12.0)  # librosa's note_to_hz("C1"), about 32.70 Hz
HANN_BANDWIDTH = 1.50018310546875  # librosa 0.8.1's tabulated equivalent noise bandwidth of 'hann'
SPARSITY = 0.01  # share of each filter spectrum's L1 mass dropped
BLOCK_BYTES = 2**20  # STFT columns are transformed in blocks of about this many output bytes

# resampy 0.2's "kaiser_fast" (resampy >= 0.3 ships another): a Kaiser-windowed sinc
# with 16 zero crossings, 2**9 samples per crossing, beta 8.5555..., roll-off 0.85 of Nyquist.
KAISER_FAST_022 = {"num_zeros": 16, "precision": 9, "beta": 8.555504641634386, "rolloff": 0.85}


def halve_rate(y: np.ndarray) -> np.ndarray:
    """librosa 0.8.1's ``resample(y, 2, 1, res_type="kaiser_fast", scale=True)`` with resampy 0.2's filter.

    ``y``: float32 ``(n,)``. Returns float32 ``(ceil(n / 2),)``: resampy 0.2's
    ``n // 2`` outputs (bit for bit, by :mod:`jukemir.sinc`), a zero appended when
    ``n`` is odd, divided by sqrt(1/2) in single precision.
    """
    from ..sinc import resample

    out = resample(np.asarray(y, dtype=np.float32), 2, 1, "kaiser_fast", version="0.2")
    out /= np.float32(np.sqrt(0.5))
    return out


def stft_blocks(y: np.ndarray, n_fft: int, hop_length: int, window: np.ndarray):
    """Centred, reflect-padded STFT as librosa 0.8.1 computed it, a block of frames at a time.

    ``y``: float32 ``(n,)``; ``window``: float64 ``(n_fft,)``. Frames start every
    ``hop_length`` samples of ``y`` padded by ``n_fft // 2`` reflected samples on
    each side (``1 + n // hop_length`` frames); each windowed frame is
    transformed in double precision and stored in single. Yields complex64
    ``(n_fft // 2 + 1, frames in the block)``, about ``BLOCK_BYTES`` each.
    """
    padded = np.pad(y, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    block = max(1, BLOCK_BYTES // ((n_fft // 2 + 1) * np.dtype(np.complex64).itemsize))
    for start in range(0, len(frames), block):
        yield np.fft.rfft(window * frames[start : start + block], axis=1).T.astype(np.complex64)


def _peaks(
    y: np.ndarray,
    sr: float,
    n_fft: int = 2048,
    fmin: float = 150.0,
    fmax: float = 4000.0,
    threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero entries of librosa 0.8.1's ``piptrack(y=y, sr=sr)``: float32 ``(frequencies, magnitudes)``.

    Peaks of the magnitude of a Hann STFT (``n_fft``, hop ``n_fft // 4``,
    reflect padding) along frequency, in [fmin, fmax) Hz and above
    ``threshold`` times their frame's maximum; frequency and magnitude refined by
    parabolic interpolation (float32, in librosa 0.8.1's order of operations).
    Frame by frame (a block at a time), in the band's rows and their neighbours.
    """
    fft_freqs = np.linspace(0, float(sr) / 2, 1 + n_fft // 2, endpoint=True)
    band = np.flatnonzero((fmin <= fft_freqs) & (fft_freqs < min(fmax, float(sr) / 2)))
    if len(band) == 0 or band[0] == 0 or band[-1] == len(fft_freqs) - 1:
        raise ValueError(f"peak band {fmin}-{fmax} Hz must lie strictly inside 0-{sr / 2} Hz")
    lo, hi = band[0], band[-1] + 1  # rows lo..hi-1, each with both neighbours
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    freqs, mags = [], []
    for block in stft_blocks(y, n_fft, n_fft // 4, window):
        S = np.abs(block)
        below, mid, above = S[lo - 1 : hi - 1], S[lo:hi], S[lo + 1 : hi + 1]
        avg = 0.5 * (above - below)
        shift = 2 * mid - above - below
        shift = avg / (shift + (np.abs(shift) < np.finfo(S.dtype).tiny))
        dskew = 0.5 * avg * shift
        # Local maxima along frequency of S where it exceeds the floor (0 elsewhere).
        kept = S[lo - 1 : hi + 1] * (S[lo - 1 : hi + 1] > threshold * np.max(S, axis=0))
        rows, cols = np.nonzero((kept[1:-1] > kept[:-2]) & (kept[1:-1] >= kept[2:]))
        freqs.append(((rows + lo + shift[rows, cols]) * float(sr) / n_fft).astype(np.float32))
        mags.append(mid[rows, cols] + dskew[rows, cols])
    return np.concatenate(freqs), np.concatenate(mags)


def estimate_tuning(y: np.ndarray, sr: float, bins_per_octave: int = BINS_PER_OCTAVE) -> float:
    """librosa 0.8.1's ``estimate_tuning(y=y, sr=sr, bins_per_octave=...)``: a fraction of a bin
    in [-0.5, 0.5)."""
    import librosa

    freqs, mags = _peaks(y, sr)
    voiced = freqs > 0
    floor = np.median(mags[voiced]) if voiced.any() else 0.0
    chosen = freqs[(mags >= floor) & voiced]
    if not chosen.any():  # librosa warns and returns 0 (silence, or no peak in 150-4000 Hz)
        return 0.0
    return float(librosa.pitch_tuning(chosen, resolution=0.01, bins_per_octave=bins_per_octave))


def _filter_lengths(sr: float, fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    """Constant-Q filter lengths in samples (librosa 0.8.1's ``constant_q_lengths``,
    filter_scale 1, gamma 0)."""
    alpha = 2.0 ** (1.0 / bins_per_octave) - 1.0
    freqs = fmin * (2.0 ** (np.arange(n_bins, dtype=float) / bins_per_octave))
    if freqs[-1] * (1 + 0.5 * HANN_BANDWIDTH * alpha) > sr / 2.0:
        raise ValueError(
            f"constant-Q filters above {freqs[-1]:.1f} Hz reach past the Nyquist frequency of {sr} Hz"
        )
    return (1.0 / alpha) * sr / (freqs + 0.0 / alpha)


def _filter_fft(
    sr: float, fmin: float, n_bins: int, bins_per_octave: int
) -> tuple[scipy.sparse.csr_matrix, int]:
    """One octave's filter spectra: complex64 CSR ``(n_bins, n_fft // 2 + 1)`` and ``n_fft``.

    As librosa 0.8.1's ``constant_q`` (Hann window, L1 norm, padded to a power
    of 2, complex64) and ``__cqt_filter_fft`` (scaled by length / n_fft, FFT in
    double, rows sparsified at quantile 0.01).
    """
    lengths = _filter_lengths(sr, fmin, n_bins, bins_per_octave)
    freqs = fmin * (2.0 ** (np.arange(n_bins, dtype=float) / bins_per_octave))
    n_fft = int(2.0 ** np.ceil(np.log2(lengths.max())))
    basis = np.zeros((n_bins, n_fft), dtype=np.complex64)
    for row, (length, freq) in enumerate(zip(lengths, freqs)):
        wave = np.exp(np.arange(-length // 2, length // 2, dtype=float) * 1j * 2 * np.pi * freq / sr)
        wave = wave * scipy.signal.get_window("hann", len(wave))
        wave = wave / np.sum(np.abs(wave))
        start = (n_fft - len(wave)) // 2
        basis[row, start : start + len(wave)] = wave
    basis *= lengths[:, np.newaxis] / float(n_fft)
    spectra = np.fft.fft(basis.astype(np.complex128), n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    # Keep, per row, the largest magnitudes that hold all but SPARSITY of the row's L1 mass.
    mags = np.abs(spectra)
    ranked = np.sort(mags, axis=1)
    cumulative = np.cumsum(ranked / np.sum(mags, axis=1, keepdims=True), axis=1)
    cut = ranked[np.arange(n_bins), np.argmin(cumulative < SPARSITY, axis=1)]
    kept = np.where(mags >= cut[:, None], spectra, 0).astype(np.complex64)
    sparse = scipy.sparse.csr_matrix(kept)
    sparse.eliminate_zeros()
    return sparse, n_fft


_BANKS = 128  # filter banks kept: one per (sr, hop, tuned fmin); tuning takes at most 101 values
_bank_cache: OrderedDict = OrderedDict()
_bank_lock = threading.Lock()


def _octave_banks(sr: float, fmin_top: float, n_octaves: int, bins_per_octave: int) -> list:
    """Per octave i (from the top): ``(filters * sqrt(2^i), n_fft)``, built once per tuning and kept."""
    key = (float(sr), float(fmin_top), n_octaves, bins_per_octave)
    with _bank_lock:
        banks = _bank_cache.get(key)
        if banks is not None:
            _bank_cache.move_to_end(key)
            return banks
    banks = []
    for i in range(n_octaves):
        bank, n_fft = _filter_fft(sr / 2.0**i, fmin_top * 2.0**-i, bins_per_octave, bins_per_octave)
        # numpy 1.x multiplied complex64 by a float64 scalar in single precision.
        bank.data *= np.float32(np.sqrt(2**i))
        banks.append((bank, n_fft))
    with _bank_lock:
        _bank_cache[key] = banks
        while len(_bank_cache) > _BANKS:
            _bank_cache.popitem(last=False)
    return banks


def cqt(
    y: np.ndarray,
    sr: float,
    hop_length: int,
    fmin: float,
    n_bins: int = N_OCTAVES * BINS_PER_OCTAVE,
    bins_per_octave: int = BINS_PER_OCTAVE,
) -> np.ndarray:
    """librosa 0.8.1's ``cqt`` (defaults, ``fmin`` already tuned): complex64
    ``(n_bins, 1 + len(y) // hop_length)``.

    Raises ``ValueError`` for a configuration where librosa 0.8.1 would have
    taken another branch (a top octave close to Nyquist, early downsampling),
    or a hop not divisible by 2^(octaves - 1).
    """
    n_octaves = int(np.ceil(n_bins / bins_per_octave))
    alpha = 2.0 ** (1.0 / bins_per_octave) - 1
    top_octave = (fmin * 2.0 ** (np.arange(n_bins, dtype=float) / bins_per_octave))[-bins_per_octave:]
    fmin_top, fmax_top = top_octave.min(), top_octave.max()
    cutoff = fmax_top * (1 + 0.5 * HANN_BANDWIDTH * alpha)
    nyquist = sr / 2.0
    rolloff = KAISER_FAST_022["rolloff"]
    twos = (hop_length & -hop_length).bit_length() - 1  # factors of 2 in hop_length
    early = min(
        max(0, int(np.ceil(np.log2(rolloff * nyquist / cutoff)) - 1) - 1), max(0, twos - n_octaves + 1)
    )
    if cutoff >= rolloff * nyquist or early > 0:
        raise ValueError(
            f"librosa 0.8.1's CQT at {sr} Hz, hop {hop_length}, fmin {fmin:.2f} Hz is not implemented"
        )
    if twos < n_octaves - 1:
        raise ValueError(f"hop_length must be a multiple of 2^{n_octaves - 1} for a {n_octaves}-octave CQT")
    responses = []
    for i, (bank, n_fft) in enumerate(_octave_banks(sr, fmin_top, n_octaves, bins_per_octave)):
        if i > 0:
            y = halve_rate(y)
        # Block by block: each output column depends only on its frame (so no full STFT in memory).
        blocks = stft_blocks(y, n_fft, hop_length // 2**i, np.ones(n_fft))
        responses.append(np.concatenate([bank @ block for block in blocks], axis=1))
    n_frames = min(r.shape[1] for r in responses)
    out = np.empty((n_bins, n_frames), dtype=np.complex64, order="F")
    top = n_bins
    for r in responses:  # octave i fills the bins below octave i - 1 (the lowest octave may be partial)
        take = min(top, r.shape[0])
        out[top - take : top] = r[r.shape[0] - take :, :n_frames]
        top -= take
    out /= np.sqrt(_filter_lengths(sr, fmin, n_bins, bins_per_octave)[:, np.newaxis])
    return out


@functools.lru_cache(maxsize=4)
def _cq_to_chroma(n_bins: int, bins_per_octave: int) -> np.ndarray:
    import librosa

    return librosa.filters.cq_to_chroma(n_bins, bins_per_octave=bins_per_octave, n_chroma=12)


def chroma_cqt(y: np.ndarray, sr: float = 22050, hop_length: int = 512) -> np.ndarray:
    """librosa 0.8.1's ``chroma_cqt(y, sr=sr, hop_length=hop_length)``: float32
    ``(12, 1 + len(y) // hop_length)``.

    ``y``: float32 mono audio at ``sr`` Hz. Each frame is divided by its
    maximum (frames that are all zero stay zero).
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    tuning = estimate_tuning(y, sr, BINS_PER_OCTAVE)
    fmin = C1_HZ * 2.0 ** (tuning / BINS_PER_OCTAVE)
    magnitude = np.abs(cqt(y, sr, hop_length, fmin))
    chroma = _cq_to_chroma(magnitude.shape[0], BINS_PER_OCTAVE).dot(magnitude)
    peak = np.max(np.abs(chroma).astype(np.float64), axis=0, keepdims=True)
    peak[peak < np.finfo(chroma.dtype).tiny] = 1.0
    out = np.empty_like(chroma)
    out[:] = chroma / peak
    return out


@functools.lru_cache(maxsize=4)
def _mel_basis(sr: float, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sr / 2.0, htk=False, norm="slaney"
    )


def mfcc(y: np.ndarray, sr: float = 22050, hop_length: int = 512, n_mfcc: int = 20) -> np.ndarray:
    """librosa 0.8.1's ``mfcc(y, sr=sr, hop_length=hop_length)``: float32
    ``(n_mfcc, 1 + len(y) // hop_length)``.

    Every default spelled out: power spectrogram of a reflect-padded Hann STFT
    (n_fft 2048), 128 Slaney mel bands from 0 Hz to Nyquist, ``10 log10(max(x,
    1e-10))`` floored at 80 dB below its maximum, orthonormal DCT-II, the first
    ``n_mfcc`` coefficients, no liftering. (Today's librosa pads with zeros by
    default; that alone moves the statistics by up to about 3 %.)
    """
    import librosa
    import scipy.fft

    n_fft = 2048
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    basis = _mel_basis(float(sr), n_fft, 128)
    blocks = stft_blocks(np.ascontiguousarray(y, dtype=np.float32), n_fft, hop_length, window)
    mel = np.concatenate([basis.dot(np.abs(block) ** 2) for block in blocks], axis=1)
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
    return scipy.fft.dct(db, type=2, axis=0, norm="ortho")[:n_mfcc]
