"""resampy's windowed-sinc resampler (``kaiser_best``, ``kaiser_fast``): exact, vectorised, no numba.

``librosa.resample(x, ..., res_type="kaiser_best")`` is ``resampy.resample``
followed by librosa's length fix. Two resampy generations give different numbers:

=========  ==========================================  =========================================
version    ``kaiser_best`` filter                      time of output ``t``
=========  ==========================================  =========================================
``"0.2"``  64 zero crossings, 2**9 entries each,       ``time += 1 / ratio`` after each output
           roll-off 0.9475937167399596,                (float64 running sum), length
           Kaiser beta 14.769656459379492              ``int(n * ratio)``
``"0.4"``  50 zero crossings, 2**13 entries each,      ``t * (1 / ratio)``, length
           roll-off 0.9173473712608761,                ``int(n * target / orig)``
           Kaiser beta 12.984585247040012
=========  ==========================================  =========================================

``"0.2"`` is resampy 0.2.2 (2019-2022), the version the original containers
installed beside librosa 0.7/0.8; ``"0.4"`` is resampy >= 0.3 (0.4.3 is what
``pip install resampy`` gives today). ``kaiser_fast`` is 16 crossings, 2**9,
0.85, beta 8.555504641634386 in 0.2 and 24, 2**9, 0.8682120388377784,
9.903224416455272 in 0.4. The tables are recomputed here from those parameters
(``rolloff * sinc(rolloff * k / 2**p) * kaiser(beta)``, the formula of resampy's
``sinc_window``): equal to resampy 0.4.3's package data, and to 0.2.2's to one
float64 ulp in 49 of 32,769 entries. The tests check both.

What resampy computes for output ``t`` (``interpn.py``, the same in both
versions once ``time`` is known): ``n = int(time)``, ``frac = scale * (time -
n)`` with ``scale = min(1, ratio)``; the left wing reads ``x[n], x[n-1], ...``
with weights ``win[j] + eta * (win[j+1] - win[j])`` at table positions ``j =
offset + i * int(scale * num_table)`` (``offset``/``eta`` the integer/fraction
of ``frac * num_table``; the table is multiplied by ``ratio`` when
downsampling), while ``j <= len(win) - index_step``; then the right wing
``x[n+1], x[n+2], ...`` from ``scale - frac``; nothing past the signal's ends.
``y[t] += weight * x[...]`` runs tap after tap with ``y`` in the input's dtype,
so for float32 every partial sum is rounded to float32, and that is part of the
result (a float64 sum differs from resampy by up to ~1.2e-6 on full-scale noise).

Here the same arithmetic runs in polyphase form. With the rates reduced to
``L / M``, output ``t = b * L + p`` reads ``x[b * M + n_p + j]``: outputs are
processed as a ``(rows, L)`` block per chunk, one vectorised pass per tap in
resampy's tap order (gather ``x``, weight ``win + eta * delta`` with each
output's own ``eta``, multiply, add with rounding to the output dtype). The
table positions of a phase are those of the chunk's first row; an output whose
``n`` or offsets differ (its float time crossed an integer: resampy 0.2's
running sum drifts by ~1e-5 samples over seconds) is recomputed on its own
with resampy's values. Where ``eta`` is the same for a whole phase (exact
ratios such as 2x, 1/2x) each tap has one weight and the pass skips two
operations. The result is bit-identical to resampy on every ratio and signal
measured (the tests assert <= 1e-6 and >= 99.9 % identical samples).
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

FILTERS = ("kaiser_best", "kaiser_fast")
VERSIONS = ("0.2", "0.4")
# (zero crossings, log2 entries per crossing, roll-off, Kaiser beta) by resampy version and filter
PARAMS = {
    "0.2": {
        "kaiser_best": (64, 9, 0.9475937167399596, 14.769656459379492),
        "kaiser_fast": (16, 9, 0.85, 8.555504641634386),
    },
    "0.4": {
        "kaiser_best": (50, 13, 0.9173473712608761, 12.984585247040012),
        "kaiser_fast": (24, 9, 0.8682120388377784, 9.903224416455272),
    },
}
CHUNK = 1 << 15  # outputs per vectorised pass: the float64 temporaries stay in a core's L2 cache
FEW_PHASES = 8  # up to this many phases, strided slices per phase; above, one gather per tap
_LOCK = threading.Lock()


@functools.cache
def filter_table(filter: str = "kaiser_best", version: str = "0.4") -> tuple[np.ndarray, int]:
    """``(win, num_table)``: the right wing of resampy's filter (float64, read-only) and entries per
    crossing."""
    if version not in PARAMS:
        raise ValueError(f"unknown resampy version {version!r}; expected one of {VERSIONS}")
    if filter not in PARAMS[version]:
        raise ValueError(f"unknown sinc filter {filter!r}; expected one of {FILTERS}")
    import scipy.signal

    zeros, bits, rolloff, beta = PARAMS[version][filter]
    num_table = 2**bits
    n = num_table * zeros
    sinc = rolloff * np.sinc(rolloff * np.linspace(0, zeros, num=n + 1, endpoint=True))
    taper = scipy.signal.get_window(("kaiser", beta), 2 * n + 1, fftbins=False)[n:]
    win = taper * sinc
    win.setflags(write=False)
    return win, num_table


class _Plan:
    """Everything about ``orig_sr -> target_sr`` that does not depend on the signal."""

    def __init__(self, orig_sr: int, target_sr: int, filter: str, version: str):
        win, num_table = filter_table(filter, version)
        self.version = version
        self.ratio = float(target_sr) / orig_sr
        if self.ratio < 1:
            win = self.ratio * win
        self.win = win
        self.delta = np.diff(win, append=win[-1])
        self.scale = min(1.0, self.ratio)
        self.time_increment = 1.0 / self.ratio
        self.num_table = num_table
        self.index_step = int(self.scale * num_table)
        if self.index_step < 1:
            raise ValueError(
                f"cannot resample {orig_sr} -> {target_sr} Hz with {filter}: ratio below 1/{num_table}"
            )
        g = math.gcd(orig_sr, target_sr)
        self.L, self.M = target_sr // g, orig_sr // g
        self.taps = len(win) // self.index_step + 1  # more than any wing has
        self.pad_left = self.taps + 1
        self.pad_right = self.taps + 2 * self.M + 2

    def length(self, n: int, orig_sr: int, target_sr: int) -> int:
        """resampy's output length for ``n`` input samples."""
        if self.version == "0.2":
            return int(n * self.ratio)
        return int(n * float(target_sr) / float(orig_sr))

    def times(self, t0: int, t1: int, previous: float) -> np.ndarray:
        """resampy's float64 time of outputs ``t0 .. t1 - 1`` (``previous``: the time of output
        ``t0 - 1``)."""
        if self.version == "0.4":
            return np.arange(t0, t1, dtype=np.float64) * self.time_increment
        steps = np.full(t1 - t0, self.time_increment)
        steps[0] = 0.0 if t0 == 0 else previous + self.time_increment
        return np.add.accumulate(steps, out=steps)  # sequential, as the time register

    def positions(self, time: np.ndarray):
        """``n, (offset, eta) left, (offset, eta) right`` of each output (resampy's arithmetic)."""
        n = time.astype(np.int64)
        frac = self.scale * (time - n)
        left = frac * self.num_table
        right = (self.scale - frac) * self.num_table
        off_l, off_r = left.astype(np.int64), right.astype(np.int64)
        return n, off_l, left - off_l, off_r, right - off_r

    def rows(self, offsets: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(win, delta)`` at ``offsets + i * index_step``, shape ``(i, len(offsets))``, zero past each
        wing's end.

        Only as many rows as the longest wing uses.
        """
        idx = offsets[None, :] + np.arange(taps)[:, None] * self.index_step
        used = idx <= len(self.win) - self.index_step  # resampy: i < (len(win) - offset) // index_step
        rows = int(used.any(axis=1).sum())
        used, idx = used[:rows], np.where(used[:rows], idx[:rows], 0)
        return np.where(used, self.win[idx], 0.0), np.where(used, self.delta[idx], 0.0)


@functools.lru_cache(maxsize=16)
def _cached_plan(orig_sr: int, target_sr: int, filter: str, version: str) -> _Plan:
    return _Plan(orig_sr, target_sr, filter, version)


def _plan(orig_sr: int, target_sr: int, filter: str, version: str) -> _Plan:
    with _LOCK:  # decoding threads build each plan (and import scipy.signal) once
        return _cached_plan(orig_sr, target_sr, filter, version)


def output_length(n: int, orig_sr: int, target_sr: int) -> int:
    """Samples returned for ``n`` input samples: librosa's ``ceil(n * target_sr / orig_sr)``."""
    return int(np.ceil(n * (float(target_sr) / orig_sr)))


def resample(
    x: np.ndarray, orig_sr: int, target_sr: int, filter: str = "kaiser_best", version: str = "0.4"
) -> np.ndarray:
    """Resample ``x`` along its last axis as ``librosa.resample(x, ..., res_type=filter)`` over resampy
    ``version``.

    Args:
        x: float32 or float64 samples, shape ``(..., n)`` (other dtypes are read as float32).
        orig_sr, target_sr: rates in Hz (positive integers).
        filter: ``"kaiser_best"`` or ``"kaiser_fast"``.
        version: ``"0.2"`` (resampy 0.2.2, the original containers') or ``"0.4"`` (resampy >= 0.3).

    Returns:
        shape ``(..., ceil(n * target_sr / orig_sr))``, the input's float dtype: resampy's
        samples, then zeros up to that length (librosa's length fix). Where resampy refuses
        (under one output sample) that is all zeros. Equal rates return ``x`` itself.
    """
    if int(orig_sr) != orig_sr or int(target_sr) != target_sr or orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr!r} -> {target_sr!r}")
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    with _LOCK:
        filter_table(filter, version)  # validates the names
    x = np.asarray(x)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    if orig_sr == target_sr:
        return x
    plan = _plan(orig_sr, target_sr, filter, version)
    n = x.shape[-1]
    n_fix = output_length(n, orig_sr, target_sr)
    n_keep = min(plan.length(n, orig_sr, target_sr), n_fix)
    out = np.zeros(x.shape[:-1] + (n_fix,), dtype=x.dtype)
    if n_keep > 0:
        for row, out_row in zip(x.reshape(-1, n), out.reshape(-1, n_fix)):
            _resample_row(plan, row, out_row[:n_keep])
    return out


def _resample_row(plan: _Plan, x: np.ndarray, y: np.ndarray) -> None:
    """Write resampy's first ``len(y)`` outputs for the 1-D signal ``x`` into ``y``."""
    L, M = plan.L, plan.M
    xp = np.zeros(plan.pad_left + len(x) + plan.pad_right, dtype=np.float64)  # zeros: resampy's ends
    xp[plan.pad_left : plan.pad_left + len(x)] = x
    rows_total = -(-len(y) // L)
    rows = max(1, CHUNK // L)
    previous = 0.0
    for b0 in range(0, rows_total, rows):
        c = min(rows, rows_total - b0)
        time = plan.times(b0 * L, (b0 + c) * L, previous)
        previous = float(time[-1])
        n, off_l, eta_l, off_r, eta_r = (a.reshape(c, L) for a in plan.positions(time))
        base = n - (b0 + np.arange(c))[:, None] * M  # n - b*M: the phase's n_p where regular
        odd = (base != base[0]) | (off_l != off_l[0]) | (off_r != off_r[0])
        wl, dl = plan.rows(off_l[0], plan.taps)
        wr, dr = plan.rows(off_r[0], plan.taps)
        fixed = np.array_equal(eta_l, np.broadcast_to(eta_l[0], eta_l.shape)) and np.array_equal(
            eta_r, np.broadcast_to(eta_r[0], eta_r.shape)
        )
        if fixed:  # every output of a phase has the same eta (exact ratios such as 2x): one weight per tap
            wl, dl, wr, dr = wl + eta_l[0] * dl, None, wr + eta_r[0] * dr, None
        acc = np.zeros((c, L), dtype=y.dtype)
        start = plan.pad_left + b0 * M + base[0]  # xp index of each phase's n in row 0
        if L <= FEW_PHASES:
            for p in range(L):
                taps = [(-i, wl[i, p], None if fixed else dl[i, p]) for i in range(len(wl))]
                taps += [(1 + k, wr[k, p], None if fixed else dr[k, p]) for k in range(len(wr))]
                taps = [tap for tap in taps if tap[1] or tap[2]]  # a zero weight adds nothing
                acc[:, p] = _accumulate_phase(xp, start[p], M, taps, eta_l[:, p], eta_r[:, p], y.dtype)
        else:
            bias = len(wl)  # xp[idx - bias] stays in the left padding for every left tap
            idx = start[None, :] + np.arange(c)[:, None] * M - bias
            _accumulate_block(xp, idx, bias, (wl, dl, eta_l), (wr, dr, eta_r), acc)
        if odd.any():
            rr, pp = np.nonzero(odd)
            acc[rr, pp] = _outputs(
                plan, xp, n[rr, pp], off_l[rr, pp], eta_l[rr, pp], off_r[rr, pp], eta_r[rr, pp], y.dtype
            )
        end = min(len(y), (b0 + c) * L)
        y[b0 * L : end] = acc.reshape(-1)[: end - b0 * L]


def _accumulate_phase(xp, start, M, taps, eta_l, eta_r, dtype) -> np.ndarray:
    """One phase of a chunk, ``x`` read as strided slices.

    ``taps``: ``(shift, weight, None)`` (one weight for every output) or ``(shift, win, delta)``.
    """
    c = len(eta_l)
    eta_l, eta_r = np.ascontiguousarray(eta_l), np.ascontiguousarray(eta_r)
    acc = np.zeros(c, dtype=dtype)
    t = np.empty(c, dtype=np.float64)
    w = np.empty(c, dtype=np.float64)
    for shift, a, d in taps:
        s = start + shift
        xs = xp[s : s + (c - 1) * M + 1 : M]
        if d is None:
            np.multiply(xs, a, out=t)
        else:  # resampy: (win + eta * delta) * x
            np.multiply(eta_l if shift <= 0 else eta_r, d, out=w)
            np.add(w, a, out=w)
            np.multiply(w, xs, out=t)
        np.add(acc, t, out=acc, casting="same_kind")  # float64 sum, rounded to the output dtype
    return acc


def _accumulate_block(xp, idx, bias, left, right, acc) -> None:
    """Every phase of a chunk at once, one gather of ``x`` per tap; ``xp[bias + idx]`` is each output's
    ``n``."""
    t = np.empty(acc.shape, dtype=np.float64)
    w = np.empty(acc.shape, dtype=np.float64)
    for side, (win, delta, eta) in enumerate((left, right)):
        for i in range(len(win)):
            shift = -i if side == 0 else 1 + i
            np.take(xp[bias + shift :], idx, out=t)
            if delta is None:
                np.multiply(t, win[i], out=t)
            else:  # resampy: (win + eta * delta) * x
                np.multiply(eta, delta[i], out=w)
                np.add(w, win[i], out=w)
                np.multiply(t, w, out=t)
            np.add(acc, t, out=acc, casting="same_kind")  # float64 sum, rounded to the output dtype


def _outputs(plan, xp, n, off_l, eta_l, off_r, eta_r, dtype) -> np.ndarray:
    """Outputs with their own ``n``, offsets and ``eta`` (resampy's loop, vectorised over the outputs)."""
    acc = np.zeros(len(n), dtype=dtype)
    at = plan.pad_left + n
    for sign, off, eta, taps in ((-1, off_l, eta_l, plan.taps), (1, off_r, eta_r, plan.taps)):
        for i in range(taps):
            j = off + i * plan.index_step
            used = j <= len(plan.win) - plan.index_step
            if not used.any():
                break
            j = np.where(used, j, 0)
            w = np.where(used, plan.win[j] + eta * plan.delta[j], 0.0)
            np.add(acc, w * xp[at - i if sign < 0 else at + 1 + i], out=acc, casting="same_kind")
    return acc
