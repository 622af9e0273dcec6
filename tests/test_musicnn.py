"""musicnn: the TF 1 checkpoint reader and the PyTorch port, on real weights.

The weights are fetched by the asset resolver (docs/fidelity/musicnn.md).
"""

from __future__ import annotations

import itertools
import shutil
import struct

import numpy as np
import pytest
import soundfile as sf

from jukemir.assets import file_checksum
from jukemir.audio import load_audio
from jukemir.representations import get_representation
from jukemir.representations.folder import run_folder
from jukemir.representations.musicnn import (
    MIN_SAMPLES,
    OFFICIAL,
    PATCH,
    Musicnn,
    git_blob_sha1,
    log_mel,
    patches,
    read_tf_weights,
    tf_variables,
)
from jukemir.tfcheckpoint import (
    CheckpointError,
    crc32c,
    load_checkpoint,
    parse_entry,
    read_index,
    unmask_crc,
)

MODELS = ("MSD_musicnn_big", "MSD_musicnn", "MTT_musicnn")
# musicnn's README:
# top_tags('./audio/joram-moments_of_clarity-08-solipsism-59-88.mp3', model='MTT_musicnn', topN=10)
README_TOP10 = [
    "techno",
    "electronic",
    "synth",
    "fast",
    "beat",
    "drums",
    "no vocals",
    "no vocal",
    "dance",
    "ambient",
]
SR = 16_000


@pytest.fixture(scope="module")
def mtt(musicnn_dir):
    """The MTT_musicnn port with the real weights (built once for the module)."""
    return Musicnn("MTT_musicnn", device="cpu", weights=musicnn_dir / "MTT_musicnn")


def tone(seconds: float, freq: float = 110.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ the reader


def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_and_mask():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 5_003, dtype=np.uint8).tobytes()
    for n in (1, 255, 256, 513, 5_003):  # 1 lane up to 19 lanes with front padding
        assert crc32c(data[:n]) == _crc32c_bitwise(data[:n]), n
    assert crc32c(np.frombuffer(data, dtype=np.uint8)) == crc32c(data)
    crc = crc32c(data)
    masked = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert unmask_crc(masked) == crc


def test_parse_entry_hand_encoded():
    # dtype=1, shape {dim {size: 7} dim {size: 38}}, shard_id=0, offset=300 (varint ac 02),
    # size=1064, crc32c fixed32
    shape = bytes([0x12, 0x02, 0x08, 0x07, 0x12, 0x02, 0x08, 0x26])
    buf = (
        bytes([0x08, 0x01, 0x12, len(shape)])
        + shape
        + bytes([0x20, 0xAC, 0x02, 0x28, 0xA8, 0x08, 0x35])
        + struct.pack("<I", 0xDEADBEEF)
    )
    entry = parse_entry("w", buf)
    assert (entry.dtype, entry.shape, entry.shard_id, entry.offset, entry.size, entry.crc32c) == (
        1,
        (7, 38),
        0,
        300,
        1064,
        0xDEADBEEF,
    )
    with pytest.raises(CheckpointError, match="slices"):
        parse_entry("w", buf + bytes([0x3A, 0x00]))


@pytest.mark.parametrize("model", MODELS)
def test_index_layout_is_the_architecture(musicnn_dir, model):
    """Every index holds exactly the model's variables (names and shapes).

    Plus Adam's state of the trainable ones.
    """
    header, entries = read_index(musicnn_dir / model)
    assert header["num_shards"] == 1 and header["endianness"] == 0
    expected = tf_variables(model)
    model_vars = {n: e.shape for n, e in entries.items() if n in expected}
    assert model_vars == expected
    trainable = [n for n in expected if not n.split("/")[-1].startswith("moving_")]
    optimizer = (
        {f"{n}/Adam" for n in trainable} | {f"{n}/Adam_1" for n in trainable} | {"beta1_power", "beta2_power"}
    )
    assert set(entries) - set(expected) == optimizer
    assert all(e.dtype == 1 and e.shard_id == 0 for e in entries.values())  # float32, one shard
    # the data file is exactly the concatenation of the tensors
    spans = sorted((e.offset, e.offset + e.size) for e in entries.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] == OFFICIAL[model, ".data-00000-of-00001"][2]
    if model == "MSD_musicnn_big":
        assert expected["conv2d_5/kernel"] == (7, 561, 1, 512)
        assert expected["dense/kernel"] == (4194, 500)
        assert expected["batch_normalization_9/gamma"] == (4194,)


@pytest.mark.parametrize("model", ["MSD_musicnn", "MTT_musicnn"])
def test_reader_returns_every_variable(musicnn_dir, model):
    _, entries = read_index(musicnn_dir / model)
    tensors = load_checkpoint(musicnn_dir / model)  # crc32c of every tensor verified
    assert set(tensors) == set(entries)
    for name, array in tensors.items():
        assert array.shape == entries[name].shape and array.dtype == np.float32, name
        assert np.isfinite(array).all(), name
    assert (tensors["batch_normalization_8/moving_variance"] > 0).all()
    assert tensors["beta1_power"].shape == () and 0 <= float(tensors["beta1_power"]) < 1  # 0.9 ** steps
    # a prefix string in musicnn's style ("<folder>/") reads the same files
    again = load_checkpoint(str(musicnn_dir / model) + "/", ["conv2d/kernel"])
    np.testing.assert_array_equal(again["conv2d/kernel"], tensors["conv2d/kernel"])


def test_reader_rejects_corruption(musicnn_dir, tmp_path):
    prefix = tmp_path / "ckpt"
    shutil.copytree(musicnn_dir / "MTT_musicnn", prefix)
    _, entries = read_index(prefix)
    data = prefix / ".data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entries["conv2d_5/kernel"].offset + 10] ^= 0xFF
    data.write_bytes(bytes(raw))
    load_checkpoint(prefix, ["conv2d/kernel"])  # untouched tensors still read
    with pytest.raises(CheckpointError, match="conv2d_5/kernel fails its crc32c"):
        load_checkpoint(prefix, ["conv2d_5/kernel"])
    index = prefix / ".index"
    raw = bytearray(index.read_bytes())
    raw[100] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="crc32c"):
        read_index(prefix)
    index.write_bytes(bytes(raw[:-1]))
    with pytest.raises(CheckpointError, match="magic"):
        read_index(prefix)
    with pytest.raises(CheckpointError, match="cannot read"):
        read_index(tmp_path / "nothing")


def test_wrong_architecture_is_refused(musicnn_dir):
    with pytest.raises(
        ValueError, match=r"batch_normalization_10/beta has shape \(200,\), the model expects \(500,\)"
    ):
        read_tf_weights(musicnn_dir / "MTT_musicnn", "MSD_musicnn_big")


def test_official_checksums_pin_the_real_files(musicnn_dir):
    for (model, name), (sha256, blob, size) in OFFICIAL.items():
        path = musicnn_dir / model / name
        if not path.exists():
            assert (model, name) == ("MSD_musicnn_big", ".data-00000-of-00001")
            continue
        assert git_blob_sha1(path) == blob  # the object id in the git tree at commit 516acb2
        assert path.stat().st_size == size
        assert file_checksum(path) == sha256


# ------------------------------------------------------------- spectrogram


def test_log_mel_modes_and_overflow():
    # A full-scale tone: float16 rounding only; a tone 100x beyond full scale overflows float16.
    normal, loud = tone(4.0, amplitude=1.0), tone(4.0, amplitude=100.0)
    f16, f32 = log_mel(normal, "float16"), log_mel(normal, "float32")
    assert f16.shape == (1 + len(normal) // 256, 96) and f16.dtype == np.float32
    assert np.isfinite(f16).all() and np.isfinite(f32).all()
    assert not np.array_equal(f16, f32)
    np.testing.assert_allclose(f16, f32, atol=1e-3)
    loud16, loud32 = log_mel(loud, "float16"), log_mel(loud, "float32")
    assert np.isposinf(loud16).any() and not np.isnan(loud16).any()
    assert np.isfinite(loud32).all()
    # inf exactly where the mel power exceeds the float16 maximum
    assert np.array_equal(np.isinf(loud16), loud32 > np.log10(10000 * 65504.0 + 1))
    with pytest.raises(ValueError, match="musicnn_log"):
        log_mel(normal, "float64")


def test_patches_drop_the_tail_and_short_audio_fails():
    assert patches(np.zeros(MIN_SAMPLES, np.float32)).shape == (1, PATCH, 96)
    n = 3 * PATCH * 256 - 257  # 3*187 - 1 frames -> 2 full patches
    assert patches(np.zeros(n, np.float32)).shape == (2, PATCH, 96)
    assert patches(np.zeros(n + 256, np.float32)).shape == (3, PATCH, 96)
    with pytest.raises(ValueError, match=r"audio too short: 47615 samples .* at least 47616"):
        patches(np.zeros(MIN_SAMPLES - 1, np.float32))


# ------------------------------------------------------------------ the port


def test_mtt_port_on_the_real_clip(mtt, real_clip):
    audio = mtt.load(real_clip)
    assert mtt.sample_rate == SR and not mtt.normalize and mtt.resampler == "kaiser_best"
    features = mtt(audio)
    assert features.shape == (1506,) and features.dtype == np.float32  # 2 x (561 + 3 x 64)
    assert np.isfinite(features).all()
    # mean-pool then max-pool: a frame max is at least the frame mean, patch by patch and so on average
    assert (features[753:] >= features[:753] - 1e-5).all()
    taggram = mtt.taggram(audio)
    assert taggram.shape == (len(audio) // 256 // PATCH, 50)
    assert ((taggram > 0) & (taggram < 1)).all()
    ranked = [mtt.labels[i] for i in np.argsort(-taggram.mean(axis=0))]
    # The original's published tags for this clip (float16 log included), rank for rank;
    # the 10th is within 3e-4 of the 11th ("beats"), so allow it one place.
    assert ranked[:9] == README_TOP10[:9], ranked[:12]
    assert README_TOP10[9] in ranked[9:11]


def test_float16_and_float32_modes(musicnn_dir, mtt):
    fixed = Musicnn("MTT_musicnn", musicnn_log="float32", device="cpu", weights=musicnn_dir / "MTT_musicnn")
    assert mtt.may_be_nonfinite and not fixed.may_be_nonfinite
    assert mtt.options()["musicnn_log"] == "float16" and fixed.options()["musicnn_log"] == "float32"
    normal = tone(6.5, amplitude=0.9)
    a, b = mtt(normal), fixed(normal)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)
    loud = tone(6.5, amplitude=100.0)
    assert not np.isfinite(mtt(loud)).all()  # the original's overflow, reported per file by the runner
    assert np.isfinite(fixed(loud)).all()


def test_batching_is_consistent(mtt):
    rng = np.random.default_rng(1)
    clips = [
        tone(3.2, 220.0),
        (0.1 * rng.standard_normal(int(9.5 * SR))).astype(np.float32),
        tone(7.0, 440.0),
    ]
    one_by_one = [mtt(c) for c in clips]
    mtt.patches_per_forward = 2  # the 2 + 3 + 1... patches cross forward chunks
    try:
        together = mtt.batch(clips)
    finally:
        mtt.patches_per_forward = 16
    assert len(together) == 3
    for a, b in zip(one_by_one, together):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert mtt.batch([]) == []


def test_big_architecture_from_npz(tmp_path):
    """MSD_musicnn_big with random weights in the cache's .npz format: 4,194-d."""
    rng = np.random.default_rng(0)
    state = {
        k: (np.ones(s) if k.endswith("variance") else 0.05 * rng.standard_normal(s)).astype(np.float32)
        for k, s in tf_variables("MSD_musicnn_big").items()
    }
    path = tmp_path / "big.npz"
    np.savez(path, **state)
    rep = get_representation("musicnn", device="cpu", weights=path)
    assert rep.dim == 4194 and rep.output_shape == (4194,)
    out = rep(tone(3.5))
    assert out.shape == (4194,) and np.isfinite(out).all()
    assert rep.options() == {
        "model": "MSD_musicnn_big",
        "musicnn_log": "float16",
        "weights": file_checksum(path),
    }
    del state["dense_1/bias"]
    np.savez(path, **state)
    with pytest.raises(ValueError, match="missing.*dense_1/bias"):
        Musicnn(device="cpu", weights=path)


def test_bad_options(musicnn_dir):
    with pytest.raises(ValueError, match="unknown musicnn model 'MSD_vgg'"):
        Musicnn("MSD_vgg", weights=musicnn_dir / "MTT_musicnn")
    with pytest.raises(ValueError, match="musicnn_log"):
        Musicnn("MTT_musicnn", musicnn_log="half", weights=musicnn_dir / "MTT_musicnn")
    with pytest.raises(ValueError, match="do not apply"):
        get_representation("musicnn", clmr_frame=59049)


# ----------------------------------------------------------- downloads, runner


def _mirror(tmp_path, musicnn_dir, models):
    root = tmp_path / "mirror"
    for model in models:
        dest = root / "models" / "musicnn" / model
        dest.mkdir(parents=True)
        for path in (musicnn_dir / model).glob(".*"):
            shutil.copy(path, dest / path.name)
    return root


def test_official_download_is_converted_once(musicnn_dir, tmp_path, monkeypatch, isolated_cache):
    mirror = _mirror(tmp_path, musicnn_dir, ["MTT_musicnn"])
    monkeypatch.setenv("JUKEMIR_MIRROR", str(mirror))
    rep = Musicnn("MTT_musicnn", device="cpu")
    source = OFFICIAL["MTT_musicnn", ".data-00000-of-00001"][0]
    converted = isolated_cache / "models" / "musicnn" / "converted" / source[:16] / "MTT_musicnn.npz"
    assert converted.is_file()
    assert rep.weights_id == source
    shutil.rmtree(mirror)  # the second build reads the conversion only
    again = Musicnn("MTT_musicnn", device="cpu")
    assert again.weights_id == rep.weights_id
    x = tone(3.5)
    np.testing.assert_array_equal(rep(x), again(x))


def test_big_data_is_checked_against_its_git_object(musicnn_dir, tmp_path, monkeypatch, isolated_cache):
    mirror = _mirror(tmp_path, musicnn_dir, ["MSD_musicnn_big"])
    monkeypatch.setenv("JUKEMIR_MIRROR", str(mirror))
    data = mirror / "models" / "musicnn" / "MSD_musicnn_big" / ".data-00000-of-00001"
    data.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match="1000 bytes, expected 95817164"):
        Musicnn(device="cpu")
    with open(data, "wb") as handle:  # the right size, the wrong bytes
        handle.truncate(95_817_164)
    with pytest.raises(ValueError, match="git object id .* expected 8797b12a"):
        Musicnn(device="cpu")
    assert not (isolated_cache / "models" / "musicnn" / "sha256.json").exists()


def test_folder_runner(mtt, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(str(src / "a.wav"), tone(4.0 * 22050 / SR), 22050)  # 4 s, resampled to 16 kHz
    sf.write(str(src / "loud.wav"), tone(4.0, amplitude=100.0), SR, subtype="FLOAT")  # far beyond full scale
    sf.write(str(src / "short.wav"), tone(1.0), SR)
    report = run_folder(mtt, src, tmp_path / "out", progress=False)
    assert report.done == 2 and report.nonfinite == 1 and len(report.failed) == 1
    assert "short.wav" in str(report.failed[0]) and "too short" in str(report.failed[0])
    assert "loud.wav: " in capsys.readouterr().err  # warned per file; the original's values are kept
    assert not np.isfinite(np.load(tmp_path / "out" / "loud.npy")).all()
    out = np.load(tmp_path / "out" / "a.npy")
    np.testing.assert_allclose(out, mtt(load_audio(src / "a.wav", SR)), rtol=1e-6)
