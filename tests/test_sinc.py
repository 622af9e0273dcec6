"""jukemir.sinc against resampy.

Today's (>= 0.3, installed) directly, 0.2.2 (the originals') via its stored outputs.
"""

from pathlib import Path

import numpy as np
import pytest

from jukemir import sinc
from jukemir.audio import resample as audio_resample
from tools.resampy022_fixture import RATIOS as FIXTURE_RATIOS
from tools.resampy022_fixture import cases, signal, stride

FIXTURE = Path(__file__).parent / "data" / "resampy022.npz"
# the rates the resampy 0.2.2 fixture holds (the project's, and 16800 -> 12000 and 7800 -> 12000, whose
# outputs' float time rounds below an integer), plus two more; 7800 and above 8 phases take the gather path
RATIOS = [*FIXTURE_RATIOS, (48000, 22050), (11025, 44100)]
TOL = 1e-6


@pytest.fixture(scope="module")
def stored():
    with np.load(FIXTURE) as data:
        return dict(data)


def librosa_kaiser(x, a, b, filt="kaiser_best"):
    """Today's reference: librosa.resample over the installed resampy, or None where resampy refuses."""
    import librosa

    try:
        return librosa.resample(x, orig_sr=a, target_sr=b, res_type=filt)
    except ValueError:
        return None


def test_tables_are_resampys():
    import resampy

    assert resampy.__version__.split(".")[0] == "0" and int(resampy.__version__.split(".")[1]) >= 3
    from resampy.filters import get_filter

    for filt in sinc.FILTERS:
        win, num_table = sinc.filter_table(filt, "0.4")
        ref, precision, rolloff = get_filter(filt)
        assert num_table == precision and len(win) == len(ref) and rolloff == sinc.PARAMS["0.4"][filt][2]
        assert np.abs(win - ref).max() <= 1e-15  # float64 rounding of the window formula
    assert sinc.PARAMS["0.4"]["kaiser_best"][:2] == (50, 13)  # not the 64 zero crossings of resampy 0.2
    assert np.array_equal(sinc.filter_table("kaiser_best", "0.4")[0], get_filter("kaiser_best")[0])


def test_tables_are_resampy022s(stored):
    for filt in sinc.FILTERS:
        win, num_table = sinc.filter_table(filt, "0.2")
        assert num_table == 512 and (len(win) - 1) // num_table == sinc.PARAMS["0.2"][filt][0]
        ref = stored[f"table/{filt}"]
        assert np.abs(win[np.linspace(0, len(win) - 1, 40).astype(int)] - ref).max() <= 1e-15


@pytest.mark.parametrize("a, b", RATIOS)
def test_matches_installed_resampy(a, b):
    for kind, n in (("music", int(1.5 * a) + 7), ("noise", int(0.5 * a) + 3)):
        x = signal(kind, n, a)
        y, ref = sinc.resample(x, a, b), librosa_kaiser(x, a, b)
        assert y.dtype == np.float32 and y.shape == ref.shape == (int(np.ceil(n * b / a)),)
        assert np.abs(y - ref).max() <= TOL, (kind, np.abs(y - ref).max())
        assert np.mean(y == ref) >= 0.999  # bit-identical here; a platform's window rounding may flip an ulp


@pytest.mark.parametrize("a, b", RATIOS)
def test_short_inputs(a, b):
    for n in range(1, 11):
        x = signal("noise", n, a)
        y, ref = sinc.resample(x, a, b), librosa_kaiser(x, a, b)
        assert y.shape == (int(np.ceil(n * b / a)),)
        if ref is None:  # resampy refuses under one output sample; here: librosa's length, zeros
            assert not y.any()
        else:
            assert np.abs(y - ref).max(initial=0.0) <= TOL


@pytest.mark.parametrize("key, kind, n, a, b", cases())
def test_matches_resampy022(stored, key, kind, n, a, b):
    x = signal(kind, n, a)
    y = sinc.resample(x, a, b, filter=key.split("/")[0], version="0.2")
    length = int(stored[f"length/{key}"])
    assert y.shape == (int(np.ceil(n * b / a)),) and not y[length:].any()
    kept = y[:length][:: stride(length)]
    assert kept.shape == stored[key].shape and np.abs(kept - stored[key]).max(initial=0.0) <= TOL
    if len(kept) > 100:
        assert np.mean(kept == stored[key]) >= 0.99  # bit-identical here


def test_edge_signals():
    for a, b in ((22050, 44100), (44100, 16000)):
        assert not sinc.resample(np.zeros(5000, np.float32), a, b).any()  # silence stays silence
        x = signal("noise", 3001, a)
        y64 = sinc.resample(x.astype(np.float64), a, b)  # float64 in: float64 sums, as resampy
        assert y64.dtype == np.float64
        np.testing.assert_allclose(y64, librosa_kaiser(x.astype(np.float64), a, b), atol=1e-12)
        stereo = np.stack([x, -0.5 * x])
        np.testing.assert_array_equal(
            sinc.resample(stereo, a, b), np.stack([sinc.resample(r, a, b) for r in stereo])
        )
    x = signal("music", 100, 22050)
    assert sinc.resample(x, 22050, 22050) is x
    with pytest.raises(ValueError, match="positive integers"):
        sinc.resample(x, 22050.5, 44100)
    with pytest.raises(ValueError, match="unknown sinc filter"):
        sinc.resample(x, 22050, 44100, filter="sinc_window")
    with pytest.raises(ValueError, match="unknown resampy version"):
        sinc.resample(x, 22050, 44100, version="0.3")
    with pytest.raises(ValueError, match="ratio below"):
        sinc.resample(x, 44100, 1)


def test_audio_resample_uses_it():
    x = signal("music", 22050, 22050)
    np.testing.assert_array_equal(
        audio_resample(x, 22050, 44100), sinc.resample(x, 22050, 44100, version="0.2")
    )
    np.testing.assert_array_equal(
        audio_resample(x, 22050, 16000, "kaiser_fast"),
        sinc.resample(x, 22050, 16000, "kaiser_fast", version="0.2"),
    )
    np.testing.assert_array_equal(
        audio_resample(x, 22050, 44100, resampy="0.4"), sinc.resample(x, 22050, 44100)
    )
