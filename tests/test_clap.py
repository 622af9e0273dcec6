"""clap-music against the official laion_clap code on the same random weights.

The weights are a small HTS-AT in LAION's format.

laion_clap 1.1.7 pins numpy < 2 and imports torchvision, webdataset and
tokenizers downloaded at import time in modules the audio branch does not
need, so it is installed here without dependencies into a temporary folder
with torchlibrosa (which its HTS-AT imports), and its ``clap_module`` is
imported as a namespace (without its ``__init__``, which pulls the image and
text code). Its ``utils`` imports ``torchvision.ops.misc.FrozenBatchNorm2d``
for a function the audio branch never calls; a one-name stand-in satisfies
that import (PyPI's torchvision does not load beside this project's torch).
The input preparation of ``get_audio_features`` (in ``training/data.py``,
whose import downloads tokenizers) is transcribed below.
"""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jukemir.cli import main
from jukemir.representations import get_representation
from jukemir.representations.clap import CLIP_SAMPLES, load_model, read_state
from tests.conftest import pip, write_tone

AUDIO_CFG = dict(  # noqa: C408 - LAION's HTSAT-base.json audio_cfg
    audio_length=1024,
    clip_samples=480000,
    mel_bins=64,
    sample_rate=48000,
    window_size=1024,
    hop_size=480,
    fmin=50,
    fmax=14000,
    class_num=5,
    model_type="HTSAT",
    model_name="base",
)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """laion_clap's clap_module (htsat, model) importable; yields the module namespace."""
    root = tmp_path_factory.mktemp("clap")
    pip("install", "--no-deps", "--target", str(root), "laion_clap==1.1.7", "torchlibrosa==0.1.0")
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401 - before the stand-in below exists

    standin = {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.ops": types.ModuleType("torchvision.ops"),
        "torchvision.ops.misc": types.ModuleType("torchvision.ops.misc"),
    }
    standin[
        "torchvision.ops.misc"
    ].FrozenBatchNorm2d = None  # only freeze_batch_norm_2d, never called here, uses it
    package = types.ModuleType("clap_module")
    package.__path__ = [str(root / "laion_clap" / "clap_module")]
    sys.modules["clap_module"] = package
    sys.path.insert(0, str(root))
    try:
        sys.modules.update(standin)
        try:
            import clap_module.utils  # the one module that imports torchvision
        finally:
            for name in standin:
                del sys.modules[name]
        import clap_module.htsat
        import clap_module.model

        yield clap_module
    finally:
        sys.path.remove(str(root))
        for name in [k for k in sys.modules if k.split(".")[0] in ("clap_module", "torchlibrosa")]:
            del sys.modules[name]


def official_checkpoint(clap_module, path, seed=0, drop=None):
    """A random small HTS-AT + projection, saved as LAION's training checkpoints are.

    Returns the reference model.
    """
    torch.manual_seed(seed)
    htsat = clap_module.htsat.HTSAT_Swin_Transformer(
        spec_size=256,
        patch_size=4,
        patch_stride=(4, 4),
        num_classes=5,
        embed_dim=8,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=8,
        config=types.SimpleNamespace(**AUDIO_CFG),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        htsat.bn0.running_mean.uniform_(-40, -10)
        htsat.bn0.running_var.uniform_(50, 200)
    reference = nn.Module()
    reference.audio_branch = htsat
    reference.audio_projection = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32))
    reference.encode_audio = types.MethodType(clap_module.model.CLAP.encode_audio, reference)
    reference.eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items() if k != drop}
    state["module.text_branch.embeddings.word_embeddings.weight"] = torch.zeros(3, 4)
    state["module.logit_scale_a"] = torch.tensor(2.65)
    torch.save({"epoch": 15, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return reference


def official_embedding(clap_module, reference, audio):
    """CLAP_Module.get_audio_embedding_from_data for one sound of at most 10 s: 16-bit rounding, repeatpad
    (get_audio_features), then CLAP.get_audio_embedding."""
    audio = (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    waveform = torch.from_numpy((audio / 32767.0).astype(np.float32))
    if len(waveform) < CLIP_SAMPLES:
        waveform = waveform.repeat(int(CLIP_SAMPLES / len(waveform)))
        waveform = F.pad(waveform, (0, CLIP_SAMPLES - len(waveform)), mode="constant", value=0)
    with torch.no_grad():
        return clap_module.model.CLAP.get_audio_embedding(reference, [{"waveform": waveform}])[0].numpy()


def test_clap_equals_laion_clap(official, tmp_path):
    reference = official_checkpoint(official, tmp_path / "clap.pt")
    rep = get_representation("clap-music", weights=tmp_path / "clap.pt", device="cpu")
    assert rep.sample_rate == 48000 and rep.output_shape == (32,)
    rng = np.random.default_rng(0)
    short = (0.3 * rng.standard_normal(3 * 48000)).astype(np.float32)
    expected = official_embedding(official, reference, short)
    np.testing.assert_allclose(rep(short), expected, rtol=1e-4, atol=1e-5)
    assert abs(np.linalg.norm(expected) - 1) < 1e-5
    # 26 s: windows 0-10, 10-20 and 20-26 s (kept: at least 5 s), embeddings averaged
    long = (0.3 * rng.standard_normal(26 * 48000)).astype(np.float32)
    parts = [long[:CLIP_SAMPLES], long[CLIP_SAMPLES : 2 * CLIP_SAMPLES], long[2 * CLIP_SAMPLES :]]
    expected = np.mean([official_embedding(official, reference, p) for p in parts], axis=0)
    np.testing.assert_allclose(rep(long), expected, rtol=1e-4, atol=1e-5)
    # a 4 s remainder after 10 s is dropped
    np.testing.assert_allclose(
        rep(long[: 14 * 48000]), official_embedding(official, reference, parts[0]), rtol=1e-4, atol=1e-5
    )


def test_clap_checkpoint_errors(official, tmp_path, capsys):
    official_checkpoint(
        official, tmp_path / "missing.pt", drop="audio_branch.layers.2.blocks.1.attn.qkv.weight"
    )
    with pytest.raises(ValueError, match=r"1 missing \(audio_branch.layers.2.blocks.1.attn.qkv.weight\)"):
        load_model(tmp_path / "missing.pt")
    torch.save({"state_dict": {"module.text_branch.x": torch.zeros(2)}}, tmp_path / "text.pt")
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "a.wav", sr=48000)
    assert (
        main(
            [
                "extract",
                "clap-music",
                str(tmp_path / "in"),
                str(tmp_path / "out"),
                "--weights",
                str(tmp_path / "text.pt"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no audio_branch.* tensors; not a CLAP checkpoint" in err[0]


class _Evil:
    """Unpickling this would run a shell command; the checkpoint reader must not."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_checkpoint_reader_runs_no_code_and_reads_only_the_audio_branch(tmp_path):
    """LAION's file is read by jukemir.checkpoints (no torch.load): foreign objects stay inert, only the
    audio branch comes back, and random bytes are one line naming the file."""
    marker = tmp_path / "pwned"
    audio = {
        "module.audio_branch.bn0.weight": torch.arange(4.0),
        "module.audio_projection.0.bias": torch.ones(2),
    }
    text = {"module.text_branch.embeddings.word_embeddings.weight": torch.zeros(1000, 64)}
    torch.save({"epoch": 15, "state_dict": {**audio, **text}, "args": _Evil(marker)}, tmp_path / "clap.pt")
    state = read_state(tmp_path / "clap.pt")
    assert not marker.exists()
    assert set(state) == {k.removeprefix("module.") for k in audio}
    assert torch.equal(state["audio_branch.bn0.weight"], torch.arange(4.0))
    (tmp_path / "junk.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match=r"junk.pt: not a readable torch checkpoint"):
        read_state(tmp_path / "junk.pt")
