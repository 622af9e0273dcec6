"""MERT-v1: a random checkpoint in the official hub format.

It is compared with transformers' HubertModel on the same weights.

MERT's official ``MERTModel`` is ``transformers``' ``HubertModel`` with MERT's
config switches; without DeepNorm it computes exactly ``HubertModel``, which is
the reference here. For DeepNorm (``LN(alpha x + f(x))``) the reference is
``HubertModel`` with every residual branch's last projection divided by alpha,
which LayerNorm's scale invariance makes equal up to its epsilon.
"""

import json

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from jukemir.cli import main
from jukemir.representations import get_representation
from jukemir.representations.mert import load_mert

SR = 24_000
TINY = dict(  # noqa: C408 - the config's keyword names
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[16] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    conv_bias=False,
    feat_proj_layer_norm=True,
    deepnorm=False,
    attention_relax=-1.0,
    feature_extractor_cqt=False,
    feature_extractor_cqt_bins=336,
    mask_time_prob=0.05,
    sample_rate=SR,
)
LARGE_STYLE = dict(TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
DEEPNORM = dict(TINY, deepnorm=True, attention_relax=32.0)


def official_snapshot(folder, config, seed=0, drop=None):
    """Write a random MERT checkpoint as the hub holds it: config.json (MERTConfig fields, remote-code
    auto_map), preprocessor_config.json and pytorch_model.bin (weight-norm as weight_g/weight_v).
    Returns the reference HubertModel holding the same weights."""
    torch.manual_seed(seed)
    reference = HubertModel(HubertConfig(**config)).eval()
    state = {}
    for key, value in reference.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        )
        if key != drop:
            state[key] = value.clone()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    meta = dict(
        config,
        model_type="mert_model",
        architectures=["MERTModel"],
        auto_map={"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"},
    )
    (folder / "config.json").write_text(json.dumps(meta))
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return reference


def reference_frames(model, folder, audio, layers):
    """The official pipeline on one input.

    The snapshot's feature extractor, the model, hidden states ``(L, T, D)``.
    """
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    inputs = extractor(audio, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        states = model(inputs["input_values"], output_hidden_states=True).hidden_states
    return torch.stack([states[k][0] for k in layers]).numpy()


@pytest.fixture
def audio():
    rng = np.random.default_rng(1)
    return (0.3 * rng.standard_normal(int(1.3 * SR))).astype(np.float32)


@pytest.mark.parametrize("config", [TINY, LARGE_STYLE], ids=["base-style", "large-style"])
def test_mert_equals_hubert_on_the_same_weights(tmp_path, audio, config):
    reference = official_snapshot(tmp_path / "snap", config)
    rep = get_representation(
        "mert-v1-95m", weights=tmp_path / "snap", layers="all", window_seconds=None, device="cpu"
    )
    out = rep(audio)
    assert out.shape == (4, 32) and out.dtype == np.float32
    expected = reference_frames(reference, tmp_path / "snap", audio, range(4)).mean(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # the default: the last block, one vector
    last = get_representation("mert-v1-95m", weights=tmp_path / "snap", window_seconds=None, device="cpu")(
        audio
    )
    np.testing.assert_allclose(last, expected[-1], rtol=1e-5, atol=1e-6)


def test_mert_windows_are_embedded_separately_and_frames_averaged(tmp_path):
    reference = official_snapshot(tmp_path / "snap", TINY)
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal(int(2.6 * SR))).astype(np.float32)
    rep = get_representation(
        "mert-v1-95m", weights=tmp_path / "snap", layers=[1, 3], window_seconds=1.0, device="cpu"
    )
    frames = [
        reference_frames(reference, tmp_path / "snap", audio[i : i + SR], [1, 3]) for i in (0, SR, 2 * SR)
    ]
    expected = np.concatenate(frames, axis=1).mean(axis=1)
    np.testing.assert_allclose(rep(audio), expected, rtol=1e-5, atol=1e-6)
    assert rep.sample_rate == SR and rep.output_shape == (2, 32)


def test_mert_deepnorm_is_the_scaled_residual(tmp_path, audio):
    reference = official_snapshot(tmp_path / "snap", DEEPNORM)
    alpha = (2 * DEEPNORM["num_hidden_layers"]) ** 0.25
    with torch.no_grad():  # LN(alpha x + f(x)) == LN(x + f(x) / alpha): scale each branch's last projection
        for layer in reference.encoder.layers:
            for linear in (layer.attention.out_proj, layer.feed_forward.output_dense):
                linear.weight /= alpha
                linear.bias /= alpha
    rep = get_representation(
        "mert-v1-95m", weights=tmp_path / "snap", layers="all", window_seconds=None, device="cpu"
    )
    expected = reference_frames(reference, tmp_path / "snap", audio, range(4)).mean(axis=1)
    np.testing.assert_allclose(rep(audio), expected, rtol=2e-4, atol=2e-5)
    plain = official_snapshot(tmp_path / "plain", TINY)  # same seed, no DeepNorm: visibly different
    assert not np.allclose(
        rep(audio)[1:],
        reference_frames(plain, tmp_path / "plain", audio, range(4)).mean(axis=1)[1:],
        atol=1e-3,
    )


def test_mert_refuses_what_it_cannot_run(tmp_path):
    official_snapshot(tmp_path / "missing", TINY, drop="encoder.layers.1.attention.q_proj.weight")
    with pytest.raises(ValueError, match="missing.*encoder.layers.1.attention.q_proj.weight"):
        load_mert(tmp_path / "missing")
    official_snapshot(tmp_path / "cqt", dict(TINY, feature_extractor_cqt=True))
    with pytest.raises(ValueError, match="CQT"):
        load_mert(tmp_path / "cqt")
    with pytest.raises(FileNotFoundError, match="weights must be a folder"):
        get_representation("mert-v1-95m", weights=tmp_path / "nope")
    official_snapshot(tmp_path / "ok", TINY)
    with pytest.raises(ValueError, match=r"layers must be distinct integers in 0\.\.3"):
        get_representation("mert-v1-95m", weights=tmp_path / "ok", layers=[4], device="cpu")
    with pytest.raises(ValueError, match="model_type is 'hubert'"):
        HubertConfig(**TINY).save_pretrained(tmp_path / "ok")
        load_mert(tmp_path / "ok")


def test_mert_through_the_command_line(tmp_path, audio, capsys):
    import soundfile as sf

    official_snapshot(tmp_path / "snap", TINY)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", audio, SR)
    sf.write(tmp_path / "in" / "b.wav", audio[: SR // 2], SR)
    code = main(
        [
            "extract",
            "mert-v1-95m",
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--weights",
            str(tmp_path / "snap"),
            "--layers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    assert np.load(tmp_path / "out" / "a.npy").shape == (32,)
    record = json.loads((tmp_path / "out" / ".jukemir" / "provenance" / "a.json").read_text())
    assert record["representation"] == "mert-v1-95m" and record["options"]["layers"] == [2]
    assert record["options"]["window_seconds"] == 5.0 and set(record["options"]["weights"]) == {
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    }
