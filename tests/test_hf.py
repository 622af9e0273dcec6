"""hf:<model>: random checkpoints saved by transformers (the hub's format).

They give what transformers itself gives.
"""

import json

import numpy as np
import pytest
import torch
from conftest import write_tone
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTModel,
    AutoFeatureExtractor,
    AutoModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from jukemir import cache
from jukemir.assets import DownloadError
from jukemir.cli import main
from jukemir.representations import get_representation

SPEECH = dict(  # noqa: C408 - config keyword names
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[16] * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


def save_wav2vec2(folder, seed=0):
    torch.manual_seed(seed)
    Wav2Vec2Model(Wav2Vec2Config(**SPEECH)).save_pretrained(folder)  # model.safetensors
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


def save_hubert_bin(folder, seed=0):
    torch.manual_seed(seed)
    HubertModel(HubertConfig(**SPEECH, feat_extract_norm="layer", do_stable_layer_norm=True)).save_pretrained(
        folder, safe_serialization=False
    )  # pytorch_model.bin
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


def save_ast(folder, seed=0):
    torch.manual_seed(seed)
    cfg = ASTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_length=64,
        num_mel_bins=16,
        frequency_stride=10,
        time_stride=10,
    )
    ASTModel(cfg).save_pretrained(folder)
    ASTFeatureExtractor(max_length=64, num_mel_bins=16).save_pretrained(folder)
    return folder


def transformers_frames(folder, audio, layers):
    """What transformers gives for one input: hidden states ``(L, T, D)``."""
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        states = model(
            **extractor(audio, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True
        ).hidden_states
    return torch.stack([states[k][0] for k in layers]).numpy()


@pytest.fixture
def audio():
    return (0.3 * np.random.default_rng(0).standard_normal(int(2.5 * 16000))).astype(np.float32)


@pytest.mark.parametrize(
    "save", [save_wav2vec2, save_hubert_bin, save_ast], ids=["wav2vec2", "hubert-bin", "ast"]
)
def test_hf_equals_transformers(tmp_path, audio, save):
    folder = save(tmp_path / "model")
    rep = get_representation(f"hf:{folder}", layers="all", window_seconds=0, device="cpu")
    assert rep.name == f"hf:{folder}" and rep.sample_rate == 16000 and rep.output_shape == (3, 32)
    np.testing.assert_allclose(
        rep(audio), transformers_frames(folder, audio, range(3)).mean(axis=1), rtol=1e-5, atol=1e-6
    )
    # default: the last layer, 10 s windows (one here)
    last = get_representation(f"hf:{folder}", device="cpu")(audio)
    np.testing.assert_allclose(
        last, transformers_frames(folder, audio, [2])[0].mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_hf_windows_and_frames(tmp_path, audio):
    folder = save_wav2vec2(tmp_path / "model")
    rep = get_representation(f"hf:{folder}", layers=[1], pool="none", window_seconds=1.0, device="cpu")
    parts = [audio[:16000], audio[16000:32000], audio[32000:]]  # the last 0.5 s is a window of its own
    expected = np.concatenate([transformers_frames(folder, p, [1])[0] for p in parts])
    out = rep(audio)
    assert out.shape == expected.shape == (49 + 49 + 24, 32)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)  # the two 1 s windows run as one batch
    with pytest.raises(ValueError, match="audio too short: 100 samples"):
        rep(audio[:100])


def test_hf_hub_download_through_the_mirror(tmp_path, audio, monkeypatch):
    mirror = tmp_path / "mirror"
    save_wav2vec2(mirror / "models" / "hf" / "someorg" / "tiny-w2v" / "main")
    monkeypatch.setenv("JUKEMIR_MIRROR", str(mirror))
    rep = get_representation("hf:someorg/tiny-w2v", device="cpu")
    local = cache.cache_dir() / "models" / "hf" / "someorg" / "tiny-w2v" / "main"
    record = json.loads((local / "sha256.json").read_text())
    assert sorted(k.rsplit("/", 1)[1] for k in record) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    np.testing.assert_allclose(
        rep(audio), transformers_frames(local, audio, [2])[0].mean(axis=0), rtol=1e-5, atol=1e-6
    )
    # a later retrieval must match what was recorded: a changed file in the cache is refused
    (local / "model.safetensors").write_bytes(b"tampered")
    save_wav2vec2(
        mirror / "models" / "hf" / "someorg" / "tiny-w2v" / "main", seed=1
    )  # the mirror changed too
    monkeypatch.setattr("jukemir.assets.time.sleep", lambda s: None)  # no backoff before the unreachable hub
    with pytest.raises(DownloadError, match="model.safetensors: checksum mismatch"):
        get_representation("hf:someorg/tiny-w2v", device="cpu")


def test_hf_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "a.wav", sr=16000)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["extract", f"hf:{empty}", str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Hugging Face model folder (missing config.json" in err[0]
    assert main(["extract", "hf:bad id!", str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    assert "neither a local folder nor a Hugging Face model id" in capsys.readouterr().err
    folder = save_wav2vec2(tmp_path / "model")
    with pytest.raises(ValueError, match=r"layers must be distinct integers in 0\.\.2"):
        get_representation(f"hf:{folder}", layers=[3])
    with pytest.raises(ValueError, match="sets model itself"):
        get_representation(f"hf:{folder}", model="x")
