"""Bad input gets one precise line naming the file and the reason, and a non-zero exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from jukemir.audio import AudioError, load_audio
from jukemir.cache import Layout
from jukemir.cli import main
from jukemir.io import save_npy, write_json
from jukemir.representations.folder import STATE_DIR

from .fakes import Slow
from .helpers import cli_env, jukemir_args, make_probe_dataset, outputs, run_jukemir, tally, write_tones

pytestmark = pytest.mark.fault


def _unreadable_runner():
    """argv prefix that makes chmod 000 bite (root reads anything: drop that capability), or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def _one_error_line(stderr: str, path, reason: str) -> str:
    lines = [line for line in stderr.splitlines() if f"{path}: " in line]
    assert len(lines) == 1, f"expected one line about {path}, got {lines}\n{stderr}"
    assert reason in lines[0], f"{lines[0]!r} does not say {reason!r}"
    return lines[0]


def test_extract_folder_of_bad_files(tmp_path):
    folder = write_tones(tmp_path / "in", 2, seed=7)
    t = np.arange(4000) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    handled = {  # other rates and channel counts are resampled and downmixed
        "stereo_48k.wav": (np.stack([tone, tone / 2], 1), 48000, {}),
        "six_channels_44k.flac": (np.tile(tone[:3675, None], (1, 6)), 44100, {}),
        "mono_22k.ogg": (tone[:1838], 22050, {"format": "OGG", "subtype": "VORBIS"}),
    }
    for name, (audio, sr, kwargs) in handled.items():
        sf.write(str(folder / name), audio, sr, **kwargs)
    nan = np.full(800, 0.1, np.float32)
    nan[5] = np.nan
    sf.write(str(folder / "nan_samples.wav"), nan, 8000, subtype="FLOAT")
    bad = {
        "empty.wav": "empty file (0 bytes)",
        "corrupt.wav": "cannot decode as audio",
        "notes.txt": "cannot decode as audio",
        "header_only.wav": "contains no audio samples",
        "cut_header.wav": "cannot decode as audio",
        "nan_samples.wav": "contains NaN or infinite samples",
        "fifo.wav": "not a regular file",
        "broken_link.wav": "broken symbolic link",
    }
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(os.urandom(3000))
    (folder / "notes.txt").write_text("not audio\n" * 50)
    header = (folder / "c00.wav").read_bytes()
    (folder / "header_only.wav").write_bytes(header[:44])
    (folder / "cut_header.wav").write_bytes(header[:30])
    os.mkfifo(folder / "fifo.wav")
    (folder / "broken_link.wav").symlink_to(tmp_path / "gone.wav")
    (folder / "subfolder").mkdir()  # not an input
    (folder / ".hidden.wav").write_bytes(b"")  # not an input
    prefix = _unreadable_runner()
    if prefix is not None:
        (folder / "unreadable.wav").write_bytes(header)
        (folder / "unreadable.wav").chmod(0)
        bad["unreadable.wav"] = "cannot read (Permission denied)"
    out = tmp_path / "out"
    cmd = (prefix or []) + jukemir_args("extract", "slow", folder, out, "--no-progress")
    r = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    for name, reason in bad.items():
        line = _one_error_line(r.stderr, folder / name, reason)
        assert line.startswith("jukemir extract slow: ")
    log = [json.loads(line) for line in (out / STATE_DIR / "errors.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(e["file"]) for e in log) == sorted(bad)
    expected = {"c00.npy", "c01.npy"} | {os.path.splitext(n)[0] + ".npy" for n in handled}
    assert set(outputs(out)) == expected
    rep = Slow()
    for name in handled:
        got = np.load(out / (os.path.splitext(name)[0] + ".npy"))
        np.testing.assert_array_equal(got, rep(rep.load(folder / name)))
    assert f"{len(expected)} done, 0 skipped, {len(bad)} failed" in r.stderr
    tally("bad_input", len(bad) + len(handled))


def test_nonfinite_model_output_and_too_short_audio(tmp_path):
    folder = write_tones(tmp_path / "in", 4, seed=9)
    sf.write(str(folder / "loud.wav"), np.full(2000, 0.95, np.float32), 8000)
    r = run_jukemir("extract", "loud", folder, tmp_path / "o", "--no-progress")
    assert r.returncode == 1
    _one_error_line(r.stderr, folder / "loud.wav", "model produced 1 non-finite values (NaN/inf)")
    assert not (tmp_path / "o" / "loud.npy").exists()

    short = tmp_path / "short"
    short.mkdir()
    sf.write(str(short / "blip.wav"), np.zeros(441, np.float32) + 0.1, 22050)
    r = run_jukemir("extract", "mfcc", short, tmp_path / "m", "--no-progress", fakes=False)
    assert r.returncode == 1
    _one_error_line(r.stderr, short / "blip.wav", "audio too short: 441 samples, need at least 1536")
    tally("bad_input", 2)


def test_too_short_for_each_model():
    """The framing of clmr and musicnn refuses clips shorter than one frame, with the numbers."""
    from jukemir.representations import clmr, musicnn

    with pytest.raises(ValueError, match=r"audio too short: 59049 samples .* needs more than 59409 samples"):
        clmr.frame_audio(np.zeros(59049, np.float32))
    with pytest.raises(ValueError, match="audio too short: 1000 samples"):
        musicnn.patches(np.zeros(1000, np.float32))
    tally("bad_input", 2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["extract", "nope", "{tmp}", "{tmp}/o"], "unknown representation 'nope'"),
        (["extract", "slow", "{tmp}/missing", "{tmp}/o"], "no such input folder"),
        (
            ["extract", "slow", "{tmp}", "{tmp}/o", "--batch_size", "2", "--batch_idx", "9"],
            "invalid batch index 9",
        ),
        (["extract", "slow", "{tmp}", "{tmp}/o", "--layers", "1"], "do not apply to representation 'slow'"),
        (["probe", "nodataset", "chroma", "--grid", "demo"], "unknown dataset 'nodataset'"),
        (["grid-config", "nodataset", "chroma", "--grid", "demo"], "unknown dataset 'nodataset'"),
        (["process", "nodataset"], "nodataset"),
        (["download", "nodataset"], "nodataset"),
    ],
)
def test_unknown_names_and_bad_arguments(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    write_tones(tmp_path, 1, seed=1)
    r = run_jukemir(*argv)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.stderr, r.stderr
    tally("bad_input")


# ---------------------------------------------------------------- the probe stage
@pytest.fixture
def dataset():
    return make_probe_dataset("faulty", "slow")


def _probe_error(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    tally("bad_input")
    return errors[0]


def test_probe_bad_features_and_meta(dataset, capsys, tmp_path):
    from jukemir.probe.data import load_probe_data

    load_probe_data("faulty", "slow")  # the dataset itself is fine
    args = ("probe", "faulty", "slow", "--grid", "demo", "--no-progress")
    good = (dataset / "u001.npy").read_bytes()
    save_npy(dataset / "u001.npy", np.zeros(5, np.float32))
    assert "u001.npy: feature has 5 dims" in _probe_error(capsys, *args)
    save_npy(dataset / "u001.npy", np.zeros((2, 8), np.float32))
    assert "u001.npy: feature has shape (2, 8)" in _probe_error(capsys, *args)
    (dataset / "u001.npy").write_bytes(good[:50])  # cut short
    assert "u001.npy: not a .npy file" in _probe_error(capsys, *args)
    (dataset / "u001.npy").unlink()
    line = _probe_error(capsys, *args)
    assert "u001.npy: missing feature" in line and "does meta.json match the features?" in line
    (dataset / "u001.npy").write_bytes(good)
    meta_file = Layout().processed("faulty") / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(meta)[:-10])
    assert f"{meta_file}: not valid JSON" in _probe_error(capsys, *args)
    write_json(meta_file, dict(meta, u000={"split": "train"}))
    assert "record 'u000' has no 'y'" in _probe_error(capsys, *args)
    write_json(meta_file, dict(meta, u000={"split": "train", "y": "zebra"}))
    assert "label 'zebra'" in _probe_error(capsys, *args)
    write_json(meta_file, meta)
    save_npy(dataset / "u002.npy", np.full(8, np.nan, np.float32))
    line = _probe_error(capsys, *args, "--nonfinite", "error")
    assert "u002.npy: 8 non-finite feature values" in line
    spec_file = Layout().processed("faulty") / "dataset.json"
    spec = json.loads(spec_file.read_text())
    write_json(spec_file, dict(spec, metric="accuracy"))
    assert f"{spec_file}: not a dataset spec" in _probe_error(capsys, *args)
    write_json(spec_file, dict(spec, task="ranking"))
    assert "task must be one of" in _probe_error(capsys, *args)


def test_probe_bad_config_fields(dataset, capsys, tmp_path):
    base = {"dataset": "faulty", "representation": "slow"}
    cases = {
        "lr.json": (dict(base, learning_rate=-1), "field 'learning_rate' must be a positive number"),
        "unknown.json": (dict(base, learning_rat=0.1), "Unknown field learning_rat specified"),
        "missing.json": ({"dataset": "faulty"}, "Required field representation missing"),
        "hidden.json": (
            dict(base, hidden_layer_sizes=[0]),
            "hidden_layer_sizes' must be a list of positive integers",
        ),
    }
    for name, (cfg, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(cfg))
        line = _probe_error(capsys, "probe", "faulty", "slow", "--config", str(tmp_path / name))
        assert f"{tmp_path / name}: " in line and message in line, line
    (tmp_path / "broken.json").write_text("{not json")
    assert "broken.json: not valid JSON" in _probe_error(
        capsys, "probe", "faulty", "slow", "--config", str(tmp_path / "broken.json")
    )


def test_loader_errors_name_the_file(tmp_path):
    """The loader itself, for callers other than the runner."""
    for path, reason in [(tmp_path / "nope.wav", "no such file"), (tmp_path, "is a directory")]:
        with pytest.raises(AudioError, match=reason) as err:
            load_audio(path)
        assert str(err.value).startswith(f"{path}: ")
    tally("bad_input", 2)


FIRST_CONTACT = [
    # (argv, what the one error line must say); {tmp} holds c00.wav, c01.wav
    (["extract", "chroma"], "no INPUT_DIR given"),
    (["extract", "chroma", "{tmp}/c00.wav", "{tmp}/o"], "is a file, not a folder"),
    (["extract", "chroma", "{tmp}", "{tmp}/c01.wav"], "exists and is not a folder"),
    (["extract", "chroma", "{tmp}", "{tmp}/c01.wav/sub"], "a parent of the output folder is a file"),
    (["extract", "chroma", "{tmp}/empty", "{tmp}/o"], "no input files"),
    *[
        (["extract", rep, "{tmp}", "{tmp}/o", "--device", "cuda:99"], "--device cuda:99")
        for rep in ("chroma", "mfcc", "choi", "musicnn", "clmr", "jukebox")
    ],
    (["extract", "mfcc", "{tmp}", "{tmp}/o", "--device", "tpu"], "not a torch device"),
    (["probe", "synthetic", "chroma", "--device", "cuda:99"], "--device cuda:99"),
    (["evaluate", "--device", "cuda:99"], "--device cuda:99"),
    (["grid-config", "../../outside", "chroma"], "is not a valid name"),
    (["grid-config", "synthetic", "../../outside"], "is not a valid name"),
    (["probe", "synthetic", "a/b"], "is not a valid name"),
    (
        ["import", "../up", "--audio", "{tmp}", "--labels", "{tmp}/l.csv", "--task", "multiclass"],
        "is not a valid name",
    ),
]


@pytest.mark.parametrize(
    "argv, message", FIRST_CONTACT, ids=lambda x: " ".join(x) if isinstance(x, list) else None
)
def test_first_contact_errors_are_one_line(tmp_path, argv, message, capsys, monkeypatch):
    """What a new user types wrong gets one line with the right cause, exit status 2, nothing written."""
    from jukemir import cli

    monkeypatch.setattr(cli, "CONTAINER_INPUT", str(tmp_path / "no-such-input"))
    write_tones(tmp_path, 2, seed=3)
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "o").exists() and not (tmp_path.parent / "outside").exists()
    tally("bad_input")


def test_undecodable_files_and_folders_named_like_audio(tmp_path, capsys):
    """A corrupt mp3 is 'not decodable' (libsndfile says 'does not exist'); a folder x.wav is reported."""
    folder = write_tones(tmp_path / "in", 1, seed=4)
    (folder / "random.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "album.wav").mkdir()
    assert main(["extract", "mfcc", str(folder), str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    _one_error_line(
        err, folder / "random.mp3", "cannot decode as audio (no audio format or audio data recognised"
    )
    assert "does not exist" not in err
    _one_error_line(err, folder / "album.wav", "is a directory, not an audio file")
    assert (tmp_path / "out" / "c00.npy").exists()
    tally("bad_input", 2)


def test_control_characters_in_file_names_cannot_forge_lines(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    evil = folder / "x.wav\njukemir extract mfcc: all good.wav"
    evil.write_bytes(b"not audio" * 50)
    assert main(["extract", "mfcc", str(folder), str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "\njukemir extract mfcc: all good" not in err  # the newline is shown as a space, on one line
    assert len([line for line in err.splitlines() if "all good" in line]) == 1
    tally("bad_input")


def test_labels_are_user_text(tmp_path):
    """Labels holding markup, '$' (matplotlib's mathematics), quotes and one accent typed two ways: no
    phantom class, a report whose figures draw and whose HTML escapes them; control characters refused."""
    import unicodedata

    from jukemir.datasets import get_dataset
    from jukemir.probe.grid import grid_cfgs
    from jukemir.probe.train import train_grid
    from jukemir.report import write_report

    audio = write_tones(tmp_path / "audio", 24, seed=21, sr=22050, seconds=(0.5, 0.8))
    labels = ["<b>&amp;", "cost $5", "$\\frac{a", unicodedata.normalize("NFC", "café")]
    spellings = labels[:3] + [unicodedata.normalize("NFD", "café")]  # é as one or as two code points
    rows = [
        f'"{p.name}","{spellings[i % 4].replace(chr(34), chr(34) * 2)}"'
        for i, p in enumerate(sorted(audio.iterdir()))
    ]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "import",
                "odd",
                "--audio",
                str(audio),
                "--labels",
                str(csv),
                "--task",
                "multiclass",
                "--split",
                "50/25/25",
                "--no-progress",
                "--jobs",
                "1",
            ]
        )
        == 0
    )
    assert sorted(get_dataset("odd").labels) == sorted(labels)  # four classes, not five
    wavs = Layout().processed("odd") / "wav"
    assert (
        main(["extract", "mfcc", str(wavs), str(Layout().representations("odd", "mfcc")), "--no-progress"])
        == 0
    )
    train_grid("odd", "mfcc", grid_cfgs("odd", "mfcc", {"early_stopping_boredom": [4]}), progress=False)
    page = write_report(tmp_path / "report", datasets=["odd"]).read_text()
    assert "<b>&amp;" not in page  # every label is escaped where the page shows it
    assert len(list((tmp_path / "report").glob("*.png"))) >= 3

    csv.write_text(f'file,label\n{sorted(audio.iterdir())[0].name},"a\x07b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="contains a control character"):
        from jukemir.datasets.custom import read_labels

        read_labels(csv, audio, "multiclass")
    tally("bad_input", 2)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00f\x00i\x00l\x00e", "not UTF-8 text"),
        (b"file,label\nc00.wav,\x00a\n", "contains a control character"),
        (b'file,label\nc00.wav,"a\n', "not a readable CSV"),
        (b"", "empty file"),
        (b"file,label\n", "no rows after the header"),
        (b"file,nope\nc00.wav,a\n", "unknown column 'nope'"),
        (b"file,label\nc00.wav,a,extra\n", "more fields than the header"),
        (b"file,label\n../c00.wav,a\n", "not found"),
    ],
)
def test_malformed_labels_csv_is_one_line(tmp_path, capsys, content, message):
    audio = write_tones(tmp_path / "audio", 2, seed=1)
    csv = tmp_path / "labels.csv"
    csv.write_bytes(content)
    assert main(["import", "bad", "--audio", str(audio), "--labels", str(csv), "--task", "multiclass"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert message in line and "labels.csv" in line, line
    tally("bad_input")


def _npy_header(shape) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: p.write_bytes(_npy_header((4_000_000_000_000,)) + bytes(32)),
            "its header says shape (4000000000000,)",
        ),
        (lambda p: np.save(p, np.zeros(8, np.complex64)), "real numbers"),
        (lambda p: np.save(p, np.zeros(0, np.float32)), "non-empty 1-D"),
        (lambda p: np.save(p, np.zeros((2, 4), np.float32)), "non-empty 1-D"),
        (lambda p: p.write_bytes(b"not a numpy file at all"), "not a .npy file"),
        (lambda p: np.save(p, np.array(["a", "b"])), "real numbers"),
    ],
    ids=["giant-header", "complex", "empty", "matrix", "garbage", "strings"],
)
def test_bad_feature_files_are_refused_by_name(tmp_path, capsys, make, message):
    folder = make_probe_dataset("feats", "slow", n=20)
    victim = folder / "u007.npy"
    make(victim)
    assert main(["probe", "feats", "slow", "--grid", "demo", "--no-progress"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert str(victim) in line and message in line, line
    tally("bad_input")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("probe.pt", b"garbage", "not a readable probe"),
        ("scaler.npz", b"garbage", "not a readable scaler"),
        ("cfg.json", b"[1, 2]", "cfg.json"),
        ("train.json", b"{bad json", "not valid JSON"),
        ("metrics.json", b"{bad json", "not valid JSON"),
    ],
)
def test_corrupt_probe_run_files_are_one_line(tmp_path, capsys, name, data, message):
    make_probe_dataset("runs", "slow", n=30)
    assert main(["probe", "runs", "slow", "--config", *_one_config(tmp_path), "--no-progress"]) == 0
    (run,) = [
        p for p in Layout().probes("runs", "slow").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    (run / name).write_bytes(data)
    capsys.readouterr()
    assert main(["evaluate", "--dataset", "runs"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert message in line and str(run) in line, line
    tally("bad_input")


def _one_config(tmp_path):
    from jukemir.probe.grid import grid_cfgs, write_grid_configs

    cfgs = grid_cfgs("runs", "slow", {"early_stopping_boredom": [4]})
    return [str(p) for p in write_grid_configs(cfgs, tmp_path / "cfgs")]


def test_malformed_meta_json_is_one_line(tmp_path, capsys):
    make_probe_dataset("meta", "slow", n=20)
    meta_file = Layout().processed("meta") / "meta.json"
    for text, message in [
        ('{"../../etc/passwd": {"split": "train", "y": "a"}}', "cannot name a file"),
        ('{"u1": {"split": "train"}}', "has no 'y'"),
        ('{"u1": {"split": "later", "y": "a"}}', "has split 'later'"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"u1": ', "not valid JSON"),
    ]:
        meta_file.write_text(text)
        assert main(["probe", "meta", "slow", "--grid", "demo", "--no-progress"]) == 2
        (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
        assert message in line and "meta.json" in line, line
    tally("bad_input", 5)


def test_long_audio_is_refused_before_decoding_by_the_handcrafted_features(tmp_path, capsys):
    """chroma and mfcc hold a whole clip in memory: a file over the limit is refused by name, before any
    decoding (a 3-hour file would need about 13 GB); the limit can be raised."""
    folder = write_tones(tmp_path / "in", 2, seed=12, sr=8000, seconds=(2.0, 2.5))
    long = folder / "c00.wav"
    for rep in ("chroma", "mfcc"):
        assert (
            main(["extract", rep, str(folder), str(tmp_path / rep), "--no-progress", "--max-seconds", "2.2"])
            == 1
        )
        err = capsys.readouterr().err
        line = _one_error_line(err, folder / "c01.wav", "longer than")
        assert f"{rep}'s limit of 0.0366667 min" in line and "--max-seconds" in line, line
        assert (tmp_path / rep / f"{long.stem}.npy").exists() == (sf.info(str(long)).duration <= 2.2)
    tally("bad_input", 2)


def test_file_names_that_are_not_utf8(tmp_path, capsys):
    """A file name in another encoding (latin-1 'café') is an ordinary input: decoded, its output named by the
    same bytes; a bad one with such a name is one line, its bytes shown escaped."""
    folder = tmp_path / "in"
    folder.mkdir()
    tone = (0.3 * np.sin(np.arange(22050) / 5.0)).astype(np.float32)
    sf.write(os.fsencode(folder) + b"/caf\xe9.wav", tone, 22050)
    (folder / os.fsdecode(b"bad\xff.wav")).write_bytes(b"junk" * 100)
    out = tmp_path / "out"
    assert main(["extract", "mfcc", str(folder), str(out), "--no-progress"]) == 1
    assert os.path.exists(os.fsencode(out) + b"/caf\xe9.npy")
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "bad" in x]
    assert "bad\\udcff.wav: cannot decode as audio (Format not recognised" in line, line
    assert main(["extract", "mfcc", str(folder), str(out), "--no-progress"]) == 1  # the rerun keeps it
    assert "1 skipped" in capsys.readouterr().err
    tally("bad_input", 2)
