import librosa
import numpy as np
import pytest

from jukemir.audio import load_audio
from jukemir.representations import get_representation
from jukemir.representations.handcrafted import delta_statistics


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
    with pytest.raises(ValueError):
        delta_statistics(frames[:, :2])


@pytest.mark.parametrize("name, dim, fn", [("chroma", 72, librosa.feature.chroma_cqt), ("mfcc", 120, librosa.feature.mfcc)])
def test_matches_independent_computation(real_clip, name, dim, fn):
    rep = get_representation(name)
    assert rep.dim == dim and rep.sample_rate == 22050 and rep.normalize
    audio = load_audio(real_clip, 22050, normalize=True)[: 22050 * 8]
    feats = rep(audio)
    assert feats.shape == (dim,) and feats.dtype == np.float32 and np.isfinite(feats).all()
    frames = fn(y=audio, sr=22050, hop_length=512)
    np.testing.assert_allclose(feats, _independent_stats(frames.astype(np.float64)), rtol=1e-4, atol=1e-5)


def test_real_clip_via_load(real_clip):
    rep = get_representation("chroma")
    audio = rep.load(real_clip)
    assert np.isclose(np.abs(audio).max(), 1.0)  # peak-normalised, as the original
    assert np.isfinite(rep(audio)).all()


def test_too_short_is_clear():
    with pytest.raises(ValueError, match="too short"):
        get_representation("mfcc")(np.zeros(100, np.float32))


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="clmr_frame"):
        get_representation("chroma", clmr_frame=59049)
    with pytest.raises(ValueError, match="unknown representation"):
        get_representation("nope")
