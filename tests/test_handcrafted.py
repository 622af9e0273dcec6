"""chroma and mfcc: the original's statistics, and librosa 0.8.1's features reproduced.

The reference, ``tests/data/handcrafted_librosa081.npz``, was computed with the
real librosa 0.8.1 (and resampy 0.2.2) by ``tools/make_handcrafted_reference.py``,
on synthetic signals that script builds (rebuilt here) and on the real clip
``EXAMPLE_MUSICNN_JORAM`` as jukemir's loader decodes it.

Tolerance: 16 float32 ulps of each vector's largest magnitude
(``16 * 2**-23 * max|ref|``, about 2e-6 for chroma, 1e-3 for mfcc). Tuning,
STFTs, filters, resampling and the CQT are librosa 0.8.1's bit for bit (the
tuning is compared exactly below); what is left is the rounding of float32
matrix products, log10 and DCT, which depends on the BLAS and numpy builds:
measured up to 1.8 ulps (here and on 80 random signals). The smallest real
drift is far above: one 0.01-bin step of the tuning moves chroma by 6e-4
(5,000 ulps), and today's librosa defaults move chroma by 2e-3 to 0.2 and mfcc
by 5e-4 to 0.5 relative.
"""

import functools
import importlib.util
from pathlib import Path

import librosa
import numpy as np
import pytest

from jukemir.audio import load_audio
from jukemir.cli import main as cli_main
from jukemir.representations import get_representation, librosa081
from jukemir.representations.handcrafted import delta_statistics

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).parent / "data" / "handcrafted_librosa081.npz"
TOLERANCE_ULPS = 16


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "make_handcrafted_reference", ROOT / "tools" / "make_handcrafted_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


@functools.lru_cache(maxsize=1)
def _signals() -> dict:
    return TOOL.signals()


@functools.lru_cache(maxsize=1)
def _reference() -> dict:
    data = np.load(REFERENCE)
    names = [str(n) for n in data["names"]]
    per_input = {
        n: {key: data[key][i] for key in ("sha256", "tuning", "chroma", "mfcc")} for i, n in enumerate(names)
    }
    return {
        "inputs": per_input,
        "taps": data["kaiser_fast_022_taps"],
        "rolloff": float(data["kaiser_fast_022_rolloff"]),
    }


def _assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    tolerance = TOLERANCE_ULPS * np.finfo(np.float32).eps * np.abs(want).max()
    error = np.abs(got.astype(np.float64) - want).max()
    assert error <= tolerance, f"{what}: max error {error:.3g} above the tolerance {tolerance:.3g}"


def _check_against_reference(name: str, audio: np.ndarray) -> None:
    ref = _reference()["inputs"][name]
    assert TOOL.sha256(audio) == ref["sha256"], (
        f"{name}: the input differs from the one the reference was computed on; "
        "rerun tools/make_handcrafted_reference.py"
    )
    assert librosa081.estimate_tuning(audio, 22050) == ref["tuning"]
    _assert_close(get_representation("chroma")(audio), ref["chroma"], f"{name} chroma")
    _assert_close(get_representation("mfcc")(audio), ref["mfcc"], f"{name} mfcc")


def test_reference_covers_the_synthetic_signals():
    assert set(_signals()) | {"real"} == set(_reference()["inputs"])


@pytest.mark.parametrize("name", sorted(TOOL.signals()))
def test_matches_librosa_081(name):
    _check_against_reference(name, _signals()[name])


def test_real_clip_matches_librosa_081(real_clip):
    audio = get_representation("chroma").load(real_clip)
    assert np.isclose(np.abs(audio).max(), 1.0)  # peak-normalised, as the original
    _check_against_reference("real", audio)


def test_installed_librosa_differs_from_the_original():
    """The option keeps today's librosa defaults: measurably not the original's (why the default exists)."""
    audio, ref = _signals()["chord"], _reference()["inputs"]["chord"]
    for name in ("chroma", "mfcc"):
        got = get_representation(name, handcrafted_librosa="installed")(audio)
        assert np.abs(got - ref[name]).max() > 1e-3 * np.abs(ref[name]).max()


def test_halving_is_resampy_022_kaiser_fast():
    """The CQT's octave resampling: resampy's loop with resampy 0.2.2's kaiser_fast, bit for bit."""
    import functools

    import resampy
    import scipy.signal
    from resampy.filters import sinc_window

    def kaiser_fast_022():  # resampy 0.2.2's kaiser_fast, built by resampy's own sinc_window
        p = librosa081.KAISER_FAST_022
        window = functools.partial(scipy.signal.windows.kaiser, beta=p["beta"])
        return sinc_window(p["num_zeros"], p["precision"], window, p["rolloff"])

    half, precision, rolloff = kaiser_fast_022()
    assert (len(half), precision, rolloff) == (8193, 512, _reference()["rolloff"])
    np.testing.assert_allclose(half[:: precision // 2], _reference()["taps"], rtol=0, atol=1e-15)
    rng = np.random.RandomState(0)
    for n in (24, 25, 63, 64, 65, 1537, 22050):
        y = rng.randn(n).astype(np.float32)
        want = resampy.resample(y, 2, 1, filter=kaiser_fast_022, axis=-1)
        want = np.pad(want, (0, (n + 1) // 2 - len(want))) / np.float32(np.sqrt(0.5))
        got = librosa081.halve_rate(y)
        assert got.dtype == np.float32 and np.array_equal(got, want), n


def _independent_stats(frames):
    """Written out longhand: the original's order [mean d0, std d0, mean d1, std d1, mean d2, std d2]."""
    d1 = frames[:, 1:] - frames[:, :-1]
    d2 = d1[:, 1:] - d1[:, :-1]
    out = []
    for f in (frames, d1, d2):
        mean = f.sum(axis=1) / f.shape[1]
        std = np.sqrt(((f - mean[:, None]) ** 2).sum(axis=1) / f.shape[1])
        out += [mean, std]
    return np.concatenate(out)


def test_delta_statistics_order():
    frames = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    np.testing.assert_allclose(delta_statistics(frames), _independent_stats(frames), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        TOOL.delta_statistics(frames), _independent_stats(frames), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError):
        delta_statistics(frames[:, :2])


@pytest.mark.parametrize(
    "name, dim, fn", [("chroma", 72, librosa.feature.chroma_cqt), ("mfcc", 120, librosa.feature.mfcc)]
)
def test_installed_mode_is_the_installed_librosa(real_clip, name, dim, fn):
    rep = get_representation(name, handcrafted_librosa="installed")
    assert rep.dim == dim and rep.sample_rate == 22050 and rep.normalize
    audio = load_audio(real_clip, 22050, normalize=True)[: 22050 * 8]
    feats = rep(audio)
    assert feats.shape == (dim,) and feats.dtype == np.float32 and np.isfinite(feats).all()
    frames = fn(y=audio, sr=22050, hop_length=512)
    np.testing.assert_allclose(feats, _independent_stats(frames.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_modes_and_provenance():
    for name in ("chroma", "mfcc"):
        original = get_representation(name)
        assert original.provenance() == {
            "representation": name,
            "version": "2",
            "options": {"handcrafted_librosa": "0.8.1"},
            "resampler": "kaiser_best (resampy 0.2)",
        }
        installed = get_representation(name, handcrafted_librosa="installed")
        assert installed.options() == {"handcrafted_librosa": "installed", "librosa": librosa.__version__}
    with pytest.raises(ValueError, match="handcrafted_librosa must be"):
        get_representation("chroma", handcrafted_librosa="0.10")
    with pytest.raises(ValueError, match="handcrafted_librosa"):
        get_representation("clmr", handcrafted_librosa="0.8.1")


def test_cli_option_recomputes_outputs_of_the_other_mode(tone_folder, tmp_path):
    out = tmp_path / "out"
    extract = ["extract", "mfcc", str(tone_folder), str(out), "--no-progress"]
    assert cli_main([*extract, "--handcrafted-librosa", "installed"]) == 0
    installed = {p.name: np.load(p) for p in out.glob("*.npy")}
    assert len(installed) == 5
    assert cli_main(extract) == 0  # the default, 0.8.1: every output is stale and recomputed
    for path in out.glob("*.npy"):
        audio = get_representation("mfcc").load(tone_folder / (path.stem + ".wav"))
        np.testing.assert_array_equal(np.load(path), get_representation("mfcc")(audio))
    assert any(not np.array_equal(np.load(out / n), v) for n, v in installed.items())


def test_too_short_is_clear():
    with pytest.raises(ValueError, match="too short"):
        get_representation("mfcc")(np.zeros(100, np.float32))


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="clmr_frame"):
        get_representation("chroma", clmr_frame=59049)
    with pytest.raises(ValueError, match="unknown representation"):
        get_representation("nope")
