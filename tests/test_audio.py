import numpy as np
import pytest
import soundfile as sf

from jukemir.audio import AudioError, load_audio, resample
from tests.conftest import write_tone


def test_mono_resample_normalise(tmp_path):
    path = write_tone(tmp_path / "s.wav", seconds=1.0, sr=16000, channels=2, amplitude=0.25)
    raw = load_audio(path, mono=False)
    assert raw.shape == (2, 16000)
    mono = load_audio(path)
    np.testing.assert_allclose(mono, raw.mean(axis=0), atol=1e-6)
    x = load_audio(path, 22050, normalize=True)
    assert x.dtype == np.float32 and x.shape == (22050,)
    assert np.isclose(np.abs(x).max(), 1.0)
    y = load_audio(path, 12000, resampler="fft")
    assert y.shape == (12000,)


def test_kaiser_best_is_the_originals_resampy_by_default(tmp_path):
    """The loader's kaiser_best is resampy 0.2.2's (the original's, tests/test_sinc.py checks it against that
    version's numbers); resampy="0.4" gives today's resampy's."""
    import resampy

    from jukemir.sinc import resample as sinc_resample

    path = write_tone(tmp_path / "s.wav", seconds=0.5, sr=22050)
    x = load_audio(path)
    np.testing.assert_array_equal(load_audio(path, 44100), sinc_resample(x, 22050, 44100, version="0.2"))
    today = resampy.resample(x, 22050, 44100, filter="kaiser_best")
    np.testing.assert_allclose(load_audio(path, 44100, resampy="0.4"), today, atol=1e-6)
    assert np.abs(load_audio(path, 44100) - today).max() > 1e-4  # the generations differ


def test_offset_duration(tmp_path):
    path = write_tone(tmp_path / "s.wav", seconds=3.0, sr=8000)
    full = load_audio(path)
    part = load_audio(path, offset=1.0, duration=0.5)
    np.testing.assert_array_equal(part, full[8000:12000])


def test_fft_resampler_length():
    x = np.random.default_rng(0).normal(size=1001).astype(np.float32)
    assert resample(x, 22050, 12000, "fft").shape == (int(np.ceil(1001 * 12000 / 22050)),)
    with pytest.raises(ValueError, match="unknown resampler"):
        resample(x, 22050, 12000, "nope")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"hello, not audio" * 20, "cannot decode"),
        (b"RIFF\x00\x00\x00\x00WAVE", "cannot decode"),
    ],
)
def test_bad_files_one_line_error(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as err:
        load_audio(path, 22050)
    assert str(path) in str(err.value) and reason in str(err.value) and "\n" not in str(err.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_truncated_wav_is_clear(tmp_path):
    path = write_tone(tmp_path / "s.wav", seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # cut inside the header
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(path)
    path.write_bytes(data[:44])  # a complete header and no samples
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path)
    path.write_bytes(data[:1000])  # cut mid-data: what is there decodes
    assert load_audio(path).shape == ((1000 - 44) // 2,)


def test_real_mp3(real_clip):
    x = load_audio(real_clip, 22050, normalize=True)
    assert x.ndim == 1 and 29 * 22050 < len(x) < 30 * 22050 and np.isfinite(x).all()
    info = sf.info(str(real_clip))
    assert info.samplerate == 16000
