"""clmr: SampleCNN encoder, framing rule, official Lightning checkpoint format (random weights)."""

from __future__ import annotations

import argparse
import collections
import os
import sys
import types
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from jukemir.assets import ChecksumError
from jukemir.io import read_json
from jukemir.representations import get_representation
from jukemir.representations.clmr import (
    CLMR,
    CORRECTED_FRAME,
    PAPER_FRAME,
    SampleCNN,
    frame_audio,
    official_checkpoint,
    read_encoder_state,
)
from jukemir.representations.folder import run_folder


def random_encoder(seed: int = 0) -> SampleCNN:
    """A SampleCNN with random weights and random BatchNorm running statistics."""
    torch.manual_seed(seed)
    encoder = SampleCNN()
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.num_batches_tracked.fill_(1234)
    return encoder.eval()


class _Evil:
    """Unpickling this would run a shell command; a safe reader must not."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def save_official(path, encoder: SampleCNN, monkeypatch, extra: dict | None = None, evil=None) -> None:
    """Save ``encoder`` as CLMR's Lightning checkpoint.

    Its keys are ``encoder.*``, ``model.encoder.*``, ``model.projector.*``.

    Like a real one it pickles Lightning objects (a callback class as a dict key,
    hyper-parameters): they come from a stand-in ``pytorch_lightning`` module
    that the reader never imports.
    """
    for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    fake = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = fake.__name__, "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    state = collections.OrderedDict()
    for prefix in ("encoder.", "model.encoder."):
        state.update({prefix + k: v.clone() for k, v in encoder.state_dict().items()})
    state["model.projector.0.weight"] = torch.randn(512, 512)
    state["model.projector.2.weight"] = torch.randn(64, 512)
    state.update(extra or {})
    checkpoint = {
        "epoch": 10000,
        "global_step": 123,
        "pytorch-lightning_version": "1.2.3",
        "state_dict": state,
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(1.5)}},
        "optimizer_states": [{"state": {}}],
        "hyper_parameters": argparse.Namespace(batch_size=48, sample_rate=22050, evil=evil),
    }
    torch.save(checkpoint, path)


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "clmr_epoch=10000.ckpt"
    encoder = random_encoder()
    save_official(path, encoder, monkeypatch)
    return path, encoder


def test_official_format_loads_strictly(checkpoint, tmp_path):
    path, encoder = checkpoint
    marker = tmp_path / "pwned"
    state = read_encoder_state(path)
    assert set(state) == set(encoder.state_dict())  # model.encoder.* only: no duplicates, no projector
    rep = CLMR(weights=path, device="cpu")
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(rep.encoder.state_dict()[name], value, rtol=0, atol=0)
    assert not rep.encoder.training
    audio = np.random.default_rng(0).standard_normal(2 * PAPER_FRAME + 10).astype(np.float32)
    features = rep(audio)
    assert features.shape == (512,) and features.dtype == np.float32 and np.isfinite(features).all()
    assert rep.check_output(features).shape == (512,)
    assert not marker.exists()


def test_reader_runs_no_code_from_the_file(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    save_official(path, random_encoder(), monkeypatch, evil=_Evil(marker))
    assert len(read_encoder_state(path)) == len(SampleCNN().state_dict())
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model.encoder.sequential.11.0.weight": torch.zeros(3)}, "unexpected"),
        ({"model.encoder.sequential.0.0.weight": torch.zeros(128, 1, 5)}, "shape"),
    ],
)
def test_mismatched_checkpoint_is_refused(tmp_path, monkeypatch, change, message):
    path = tmp_path / "bad.ckpt"
    save_official(path, random_encoder(), monkeypatch, extra=change)
    with pytest.raises(ValueError, match=message):
        CLMR(weights=path, device="cpu")


def test_missing_key_is_refused(tmp_path, monkeypatch):
    encoder = random_encoder()
    path = tmp_path / "missing.ckpt"
    save_official(path, encoder, monkeypatch)
    checkpoint = torch.load(path, weights_only=False)
    del checkpoint["state_dict"]["model.encoder.sequential.10.1.running_var"]
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="missing.*sequential.10.1.running_var"):
        CLMR(weights=path, device="cpu")
    with pytest.raises(FileNotFoundError, match="no such CLMR checkpoint"):
        CLMR(weights=tmp_path / "nope.ckpt", device="cpu")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt: not a readable torch checkpoint"):
        CLMR(weights=tmp_path / "junk.ckpt", device="cpu")


def test_frame_rule():
    n = PAPER_FRAME
    assert frame_audio(np.zeros(3 * n + 1), n).shape == (3, n)
    assert frame_audio(np.zeros(3 * n), n).shape == (2, n)  # the last chunk is dropped even when full
    assert frame_audio(np.zeros(n + 1), n).shape == (1, n)
    with pytest.raises(ValueError, match="audio too short"):
        frame_audio(np.zeros(n), n)
    m = CORRECTED_FRAME
    assert frame_audio(np.zeros(3 * m), m).shape == (3, m)  # a full last frame is kept
    assert frame_audio(np.zeros(3 * m + m - 1), m).shape == (3, m)
    assert frame_audio(np.zeros(m), m).shape == (1, m)
    with pytest.raises(ValueError, match="audio too short"):
        frame_audio(np.zeros(m - 1), m)
    x = np.arange(2 * n + 5, dtype=np.float32)
    np.testing.assert_array_equal(frame_audio(x, n)[1], x[n : 2 * n])
    with pytest.raises(ValueError, match="clmr_frame"):
        frame_audio(x, 44100)


def test_encoder_sees_the_frames_of_the_rule(checkpoint):
    path, _ = checkpoint
    for frame, length, expected in (
        (PAPER_FRAME, 2 * PAPER_FRAME, 1),
        (PAPER_FRAME, 2 * PAPER_FRAME + 7, 2),
        (CORRECTED_FRAME, 2 * CORRECTED_FRAME, 2),
    ):
        rep = CLMR(clmr_frame=frame, weights=path, device="cpu")
        seen = []
        rep.encoder.register_forward_hook(
            lambda mod, inp, out, seen=seen: seen.append((tuple(inp[0].shape), tuple(out.shape)))
        )
        audio = np.random.default_rng(1).standard_normal(length).astype(np.float32)
        features = rep(audio)
        assert seen == [((expected, 1, frame), (expected, 512))]
        with torch.no_grad():
            manual = rep.encoder(torch.from_numpy(frame_audio(audio, frame))[:, None]).mean(0).numpy()
        np.testing.assert_allclose(features, manual, rtol=1e-5, atol=1e-6)


def test_batching_is_consistent(checkpoint):
    path, _ = checkpoint
    rep = CLMR(weights=path, device="cpu")
    rng = np.random.default_rng(2)
    audios = [
        rng.standard_normal(n).astype(np.float32)
        for n in (2 * PAPER_FRAME + 3, 3 * PAPER_FRAME - 1, PAPER_FRAME + 1)
    ]
    together = rep.batch(audios)
    rep.frames_per_forward = 2
    for audio, feat in zip(audios, together):
        np.testing.assert_allclose(rep(audio), feat, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="audio too short"):
        rep.batch([audios[0], np.zeros(100, np.float32)])


def test_options_and_registry(checkpoint):
    path, _ = checkpoint
    rep = get_representation("clmr", clmr_frame=59049, weights=str(path), device="cpu")
    assert rep.options()["clmr_frame"] == 59049 and len(rep.options()["weights"]) == 64
    assert (rep.sample_rate, rep.resampler, rep.normalize, rep.dim) == (22050, "kaiser_best", False, 512)
    with pytest.raises(ValueError, match="clmr_frame"):
        CLMR(clmr_frame=60000, weights=path)
    with pytest.raises(ValueError, match="choi_batch_stats"):
        get_representation("clmr", choi_batch_stats="off")


def test_folder_runner_reports_short_files(checkpoint, tmp_path):
    path, _ = checkpoint
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    sf.write(str(src / "long.wav"), 0.1 * rng.standard_normal(PAPER_FRAME + 500), 22050)
    sf.write(str(src / "short.wav"), 0.1 * rng.standard_normal(PAPER_FRAME), 22050)
    rep = CLMR(weights=path, device="cpu")
    report = run_folder(rep, src, tmp_path / "out", progress=False)
    assert report.done == 1 and len(report.failed) == 1
    assert report.failed[0][0].endswith("short.wav") and "audio too short" in report.failed[0][1]
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "long.npy"), rep(rep.load(src / "long.wav")), rtol=1e-5
    )


def test_official_checkpoint_trusted_on_first_use(checkpoint, tmp_path, monkeypatch):
    path, encoder = checkpoint
    mirror = tmp_path / "mirror"
    archive = mirror / "models" / "clmr" / "clmr_magnatagatune_mlp.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "clmr_magnatagatune_mlp/clmr_epoch=10000.ckpt")
    monkeypatch.setenv("JUKEMIR_MIRROR", str(mirror))
    ckpt = official_checkpoint()
    assert ckpt == tmp_path / "cache" / "models" / "clmr" / "clmr_magnatagatune_mlp" / "clmr_epoch=10000.ckpt"
    record = read_json(tmp_path / "cache" / "models" / "clmr" / "sha256.json")
    assert record["models/clmr/clmr_magnatagatune_mlp.zip"]["size"] == archive.stat().st_size
    rep = CLMR(device="cpu")  # the default path: the recorded file, verified
    torch.testing.assert_close(
        rep.encoder.state_dict()["sequential.5.0.weight"], encoder.state_dict()["sequential.5.0.weight"]
    )
    # The source changes: a fresh download no longer matches the record and is refused
    # (the release URL points at the same changed file, so nothing goes to the network).
    monkeypatch.setattr("jukemir.representations.clmr.RELEASE_URL", archive.as_uri())
    (tmp_path / "cache" / "models" / "clmr" / "clmr_magnatagatune_mlp.zip").unlink()
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("extra.txt", "changed")
    with pytest.raises(ChecksumError):
        official_checkpoint()
