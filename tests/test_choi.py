"""choi: the Keras 1 / Theano port, run with the real official weights.

The weights are fetched by the asset resolver (docs/fidelity/choi.md).
"""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from jukemir.assets import file_checksum
from jukemir.representations import get_representation
from jukemir.representations.choi import (
    N_SAMPLES,
    Choi,
    ChoiConvnet,
    fit_length,
    load_weights,
    official,
    py2_shuffle,
    read_keras_weights,
)
from jukemir.representations.folder import run_folder


@pytest.fixture(scope="module")
def clips():
    """Five different 29 s clips at 12 kHz: noise bursts and tones of different loudness."""
    rng = np.random.default_rng(0)
    t = np.arange(N_SAMPLES) / 12000
    out = [
        0.05 * rng.standard_normal(N_SAMPLES),
        0.5 * np.sin(2 * np.pi * 440 * t),
        0.01 * rng.standard_normal(N_SAMPLES),
    ]
    out.append(0.3 * np.sign(np.sin(2 * np.pi * 3 * t)) * rng.standard_normal(N_SAMPLES))
    out.append(0.8 * np.sin(2 * np.pi * 110 * t) * (t % 1.0))
    return [c.astype(np.float32) for c in out]


def test_py2_shuffle_matches_hand_computed_permutation():
    # random.seed(0) draws 0.8444, 0.7580, 0.4206, 0.2589; Python 2 takes j = int(r * (i + 1)) for i = 4..1:
    # j = 4, 3, 1, 0 -> swaps (4,4), (3,3), (2,1), (1,0): [0,1,2,3,4] -> [0,2,1,3,4] -> [2,0,1,3,4].
    assert py2_shuffle(range(5)) == [2, 0, 1, 3, 4]
    py3 = list(range(5))
    random.seed(0)
    random.shuffle(py3)
    assert py3 != [2, 0, 1, 3, 4]  # Python 3's shuffle is a different permutation
    assert py2_shuffle([]) == [] and py2_shuffle(["a"]) == ["a"]
    assert sorted(py2_shuffle(range(300))) == list(range(300))


def test_fit_length_tiles_and_truncates():
    short = np.arange(1, 100_001, dtype=np.float32)
    out = fit_length(short)
    assert out.shape == (N_SAMPLES,)
    np.testing.assert_array_equal(out[100_000:200_000], short)  # repeated, not zero-padded
    np.testing.assert_array_equal(out[300_000:], short[:48_000])
    np.testing.assert_array_equal(fit_length(np.ones(400_000, np.float32)), np.ones(N_SAMPLES, np.float32))
    with pytest.raises(ValueError, match="empty"):
        fit_length(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        fit_length(np.zeros((2, 10), np.float32))


def test_stored_front_end_is_kapre(choi_dir):
    """The stored STFT kernels are periodic-Hann DFT kernels and the filterbank is librosa's Slaney mel."""
    import librosa

    w = read_keras_weights(choi_dir / "weights_layer4_theano.hdf5")
    n, k = np.arange(512)[:, None], np.arange(257)[None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    np.testing.assert_allclose(
        w["stft_real"][:, 0, 0], hann[:, None] * np.cos(2 * np.pi * n * k / 512), atol=1e-6
    )
    np.testing.assert_allclose(
        w["stft_imag"][:, 0, 0], hann[:, None] * np.sin(2 * np.pi * n * k / 512), atol=1e-6
    )
    mel = librosa.filters.mel(sr=12000, n_fft=512, n_mels=96, fmin=0.0, fmax=6000.0)
    np.testing.assert_allclose(w["mel"], mel.T, atol=1e-7)
    # Keras 1 mode-2 BatchNorm never updates its running statistics: they are the initial 0 / 1.
    for block in w["blocks"]:
        assert np.all(block["mean"] == 0) and np.all(block["var"] == 1)


def test_five_files_share_weights(choi_dir, tmp_path):
    weights, digest = load_weights(choi_dir)
    assert len(weights["blocks"]) == 5 and len(digest) == 64
    for k in range(4):
        assert len(read_keras_weights(choi_dir / f"weights_layer{k}_theano.hdf5")["blocks"]) == k + 1
    # A file whose shared layer differs is refused (one tapped network would not be the five models).
    import h5py

    for k in range(5):
        shutil.copy(choi_dir / f"weights_layer{k}_theano.hdf5", tmp_path)
    with h5py.File(tmp_path / "weights_layer2_theano.hdf5", "r+") as f:
        f["ConvBNEluDr/convolution2d_1_b"][0] += 1.0
    with pytest.raises(ValueError, match="weights_layer2_theano.hdf5: its layers differ"):
        load_weights(tmp_path)
    os.remove(tmp_path / "weights_layer3_theano.hdf5")
    with pytest.raises(FileNotFoundError, match="weights_layer3_theano.hdf5"):
        load_weights(tmp_path)


def test_theano_flip_on_a_delta(choi_dir):
    """An asymmetric stored kernel applied to a delta must reproduce the kernel itself (true convolution)."""
    weights, _ = load_weights(choi_dir)
    kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    weights["blocks"][0]["W"] = np.zeros_like(weights["blocks"][0]["W"])
    weights["blocks"][0]["W"][0, 0] = kernel
    net = ChoiConvnet()
    net.load_keras(weights)
    delta = np.zeros((7, 9), np.float32)
    delta[3, 4] = 1.0
    with torch.no_grad():
        out = net.convs[0](torch.from_numpy(delta)[None, None])[0, 0].numpy() - weights["blocks"][0]["b"][0]
    np.testing.assert_allclose(out, scipy.signal.convolve2d(delta, kernel, mode="same"), atol=1e-6)
    np.testing.assert_array_equal(out[2:5, 3:6], kernel)  # not the cross-correlation's flipped kernel
    assert not np.allclose(out, scipy.signal.correlate2d(delta, kernel, mode="same"))


def test_front_end_is_theano_convolution(choi_dir):
    """dB mel equals a NumPy true convolution of the zero-padded signal with the stored kernels (hop 256)."""
    weights, _ = load_weights(choi_dir)
    net = ChoiConvnet()
    net.load_keras(weights)
    x = np.random.default_rng(1).standard_normal(5000).astype(np.float64)
    padded = np.pad(x, 256)
    n_frames = -(-len(x) // 256)
    re = np.stack(
        [np.convolve(padded, weights["stft_real"][:, 0, 0, f], "valid")[::256][:n_frames] for f in range(257)]
    )
    im = np.stack(
        [np.convolve(padded, weights["stft_imag"][:, 0, 0, f], "valid")[::256][:n_frames] for f in range(257)]
    )
    expected = 10 * np.log10(np.maximum(weights["mel"].T.astype(np.float64) @ (re**2 + im**2), 1e-10))
    with torch.no_grad():
        got = net.decibels(torch.from_numpy(x.astype(np.float32))[None])[0, 0].numpy()
    assert got.shape == (96, 20)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    with torch.no_grad():
        assert net.decibels(torch.zeros(1, N_SAMPLES)).shape == (1, 1, 96, 1360)


def test_real_clip_gives_160_finite(choi_dir, real_clip):
    rep = get_representation("choi", weights=str(choi_dir), device="cpu")
    audio = rep.load(real_clip)
    assert audio.dtype == np.float32 and len(audio) <= N_SAMPLES
    features = rep(audio)
    assert features.shape == (160,) and features.dtype == np.float32 and np.isfinite(features).all()
    assert rep.check_output(features).shape == (160,)
    # Block 4 flattens a 1x1 map after ELU, so its 32 values are > -1.
    assert features[128:].min() > -1.0


def test_batch_mode_reproduces_batch_dependence(choi_dir, clips):
    rep = Choi(weights=choi_dir, device="cpu")
    assert rep.batch_dependent and rep.default_batch_size == 256
    a = rep.batch([clips[0], clips[1], clips[2]])
    again = rep.batch([clips[0], clips[1], clips[2]])
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x, y)  # the same batch gives identical features
    b = rep.batch([clips[0], clips[3], clips[4]])
    alone = rep(clips[0])
    assert np.abs(a[0] - b[0]).max() > 1e-2  # same file, other batch mates: other features
    assert np.abs(a[0] - alone).max() > 1e-2
    rep.chunk = 1  # statistics accumulated over sub-batches equal the whole batch's
    for x, y in zip(a, rep.batch([clips[0], clips[1], clips[2]])):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_per_file_mode_is_independent_of_batch(choi_dir, clips):
    rep = Choi(choi_batch_stats="off", weights=choi_dir, device="cpu")
    assert not rep.batch_dependent
    batch = rep.batch(clips[:4])
    others = rep.batch([clips[3], clips[2], clips[0]])
    # Equal up to float32 rounding (other batch sizes take other conv kernels; the stored statistics do not
    # normalise, so activations reach ~1e4 and rounding grows with them).
    for i, j in ((0, 2), (2, 1), (3, 0)):
        np.testing.assert_allclose(batch[i], others[j], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch[1], rep(clips[1]), rtol=1e-4, atol=1e-5)
    assert np.isfinite(np.stack(batch)).all()
    with pytest.raises(ValueError, match="choi_batch_stats"):
        Choi(choi_batch_stats="maybe", weights=choi_dir)


def test_folder_runner_rebuilds_the_shuffled_batches(choi_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        sf.write(
            str(src / f"f{i}.wav"), (0.1 * (i + 1) * rng.standard_normal(24000)).astype(np.float32), 12000
        )
    rep = Choi(weights=choi_dir, device="cpu")
    names = sorted(p.name for p in src.iterdir())
    order = rep.order_files(names)
    assert order == [names[i] for i in (2, 0, 1, 3, 4)]
    for idx, n_files in ((0, 2), (1, 2), (2, 1)):
        report = run_folder(rep, src, tmp_path / "out", batch_size=2, batch_idx=idx, progress=False)
        assert report.ok and report.done == n_files
    audios = {n: rep.load(src / n) for n in names}
    for batch in (order[0:2], order[2:4], order[4:]):
        expected = rep.batch([audios[n] for n in batch])
        for name, feat in zip(batch, expected):
            got = np.load(tmp_path / "out" / name.replace(".wav", ".npy"))
            np.testing.assert_allclose(got, feat, rtol=1e-5, atol=1e-5)


def test_official_assets_pin_the_real_files(choi_dir, tmp_path, monkeypatch):
    assets = official().assets
    assert [a.path_rel for a in assets] == [f"models/choi/weights_layer{k}_theano.hdf5" for k in range(5)]
    for k, asset in enumerate(assets):
        assert "/e1f83c389ff32ce48551f916414ae869cbe7f6e6/weights_transfer/" in asset.urls[0]
        assert asset.checksum == file_checksum(choi_dir / f"weights_layer{k}_theano.hdf5")
    # The default path downloads (here from a local mirror), verifies and loads them.
    mirror = tmp_path / "mirror" / "models" / "choi"
    shutil.copytree(choi_dir, mirror)
    monkeypatch.setenv("JUKEMIR_MIRROR", str(tmp_path / "mirror"))
    rep = Choi(device="cpu")
    assert rep.options()["weights"] == load_weights(choi_dir)[1]
    assert (tmp_path / "cache" / "models" / "choi" / "weights_layer4_theano.hdf5").is_file()


def test_weights_option_takes_the_folder_or_one_of_its_files(choi_dir, tmp_path):
    digest = load_weights(choi_dir)[1]
    assert load_weights(choi_dir / "weights_layer2_theano.hdf5")[1] == digest  # a file: its folder is meant
    (tmp_path / "other.hdf5").write_bytes(b"x")
    with pytest.raises(ValueError, match="other.hdf5: is a file; choi weights are the folder holding"):
        load_weights(tmp_path / "other.hdf5")
    with pytest.raises(FileNotFoundError, match="no such folder of choi weights"):
        load_weights(tmp_path / "missing")
