"""HEAR 2021 both ways: jukemir.hear.<name> passes PyPI's hearvalidator; hear:<module> runs hearbaseline.

hearvalidator 2021.0.2 and hearbaseline 2021.1.1 pin what this project cannot
install (tensorflow; numpy 1.19.2 and numba 0.48), so they are installed here
without their dependencies into a temporary folder (``pip install --no-deps
--target``) and put on the path. What they import besides: hearbaseline.vqt
needs librosa, numpy and torch (all jukemir's own dependencies; hearbaseline's
default module, ``naive``, calls ``librosa.filters.mel`` positionally, which
librosa >= 0.10 refuses, so ``hearbaseline.vqt`` is the baseline used);
hearvalidator imports tensorflow only to recognise TensorFlow models
(``isinstance(model, tf.Module)``) and runs its torch checks otherwise, so it
runs with a one-class stand-in for tensorflow instead of the 1 GB package.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_mert import TINY, official_snapshot

from jukemir.audio import load_audio
from jukemir.cli import main
from jukemir.representations import get_representation
from tests.conftest import pip

PACKAGES = ("hearvalidator==2021.0.2", "hearbaseline==2021.1.1")


@pytest.fixture(scope="module")
def hear_path(tmp_path_factory):
    """A folder holding hearvalidator and hearbaseline (no dependencies), on sys.path.

    And the tensorflow stand-in.
    """
    root = tmp_path_factory.mktemp("hear")
    pip("install", "--no-deps", "--target", str(root / "site"), *PACKAGES)
    standin = root / "standin" / "tensorflow"
    standin.mkdir(parents=True)
    (standin / "__init__.py").write_text(
        '"""Stand-in: hearvalidator only asks isinstance(model, tf.Module)."""\n\n\nclass Module:\n    pass\n'
    )
    sys.path.insert(0, str(root / "site"))
    try:
        yield root
    finally:
        sys.path.remove(str(root / "site"))
        for name in [m for m in sys.modules if m.split(".")[0] in ("hearbaseline", "hearvalidator")]:
            del sys.modules[name]


def test_hearvalidator_passes(hear_path, tmp_path):
    """hearvalidator's own checks (ValidateModel, as its command line runs them) on mfcc and on MERT
    (24 kHz, so the HEAR model takes 48 kHz and resamples) with a weights folder, in one process."""
    official_snapshot(tmp_path / "snap", TINY)
    script = (
        "from hearvalidator.validate import ValidateModel\n"
        "ValidateModel('jukemir.hear.mfcc', '', device='cpu')()\n"
        "print('mfcc: Looks good!')\n"
        f"ValidateModel('jukemir.hear.mert_v1_95m', {str(tmp_path / 'snap')!r}, device='cpu')()\n"
        "print('mert: Looks good!')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hear_path / "site"), str(hear_path / "standin")]))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mfcc: Looks good!" in result.stdout and "mert: Looks good!" in result.stdout
    assert "Received embedding of shape: torch.Size([16, 41, 120])" in result.stdout  # 2 s every 50 ms
    assert "Received embedding of shape: torch.Size([8, 120])" in result.stdout
    assert "Model sample rate is: 48000" in result.stdout  # MERT: 24 kHz is no HEAR rate


def test_hear_model_matches_the_representation(tmp_path):
    import jukemir.hear.mfcc as module

    model = module.load_model()
    rng = np.random.default_rng(0)
    audio = torch.from_numpy((0.2 * rng.standard_normal((2, 22050 * 2))).astype(np.float32))
    rep = get_representation("mfcc")
    scene = module.get_scene_embeddings(audio, model)
    for i in range(2):
        peak = np.abs(audio[i].numpy()).max()
        np.testing.assert_allclose(scene[i].numpy(), rep(audio[i].numpy() / peak), rtol=1e-6)
    embeddings, stamps = module.get_timestamp_embeddings(audio, model)
    window = audio[1, 22050 - 11025 : 22050 + 11025].numpy()  # the window centred on 1000 ms
    np.testing.assert_allclose(
        embeddings[1, 20].numpy(), rep(window / np.abs(window).max()), rtol=1e-5, atol=1e-6
    )
    assert stamps[1, 20] == 1000.0


def test_extract_with_hearbaseline(hear_path, tmp_path, capsys):
    from hearbaseline import vqt

    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i, seconds in enumerate((1.0, 1.0, 0.7)):
        sf.write(
            tmp_path / "in" / f"x{i}.wav",
            (0.3 * rng.standard_normal(int(seconds * 22050))).astype(np.float32),
            22050,
        )
    assert (
        main(
            ["extract", "hear:hearbaseline.vqt", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress"]
        )
        == 0
    )
    model = vqt.load_model()
    for i in range(3):
        audio = load_audio(tmp_path / "in" / f"x{i}.wav", 44100)
        expected = vqt.get_scene_embeddings(torch.from_numpy(audio)[None], model)[0].numpy()
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"x{i}.npy"), expected, rtol=1e-6)
    record = json.loads((tmp_path / "out" / ".jukemir" / "provenance" / "x0.json").read_text())
    assert record["representation"] == "hear:hearbaseline.vqt"
    assert record["options"] == {
        "module": "hearbaseline.vqt",
        "model_file": None,
        "distribution": "hearbaseline",
        "version": "2021.1.1",
    }


def test_hear_round_trip_equals_the_representation(tmp_path, tone_folder):
    # jukemir's HEAR module read back through hear: gives what the representation gives
    assert (
        main(["extract", "hear:jukemir.hear.mfcc", str(tone_folder), str(tmp_path / "hear"), "--no-progress"])
        == 0
    )
    assert main(["extract", "mfcc", str(tone_folder), str(tmp_path / "direct"), "--no-progress"]) == 0
    for path in sorted(Path(tmp_path / "direct").glob("*.npy")):
        np.testing.assert_allclose(np.load(tmp_path / "hear" / path.name), np.load(path), rtol=1e-6)


def test_hear_errors_are_one_line(tmp_path, capsys, tone_folder):
    for name, reason in (
        ("hear:no_such_module", "cannot import the HEAR module"),
        ("hear:json", "not a HEAR module"),
        ("hear:", "give what follows 'hear:'"),
    ):
        assert main(["extract", name, str(tone_folder), str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0], err
