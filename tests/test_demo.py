"""The demo pipeline end to end (small): chroma must beat mfcc on the synthetic key task."""

import os
import subprocess
import sys

import pytest

from jukemir.cache import Layout
from jukemir.datasets import load_meta, synthetic


def test_synthetic_is_deterministic_and_split_by_song(tmp_path):
    layout = Layout(tmp_path)
    a = synthetic.generate(
        layout.processed("a"), songs_per_key=3, clips_per_song=2, clip_seconds=0.5, progress=False
    )
    b = synthetic.generate(
        layout.processed("b"), songs_per_key=3, clips_per_song=2, clip_seconds=0.5, progress=False
    )
    assert sorted(p.name for p in (a / "wav").iterdir()) == sorted(p.name for p in (b / "wav").iterdir())
    assert all((a / "wav" / p.name).read_bytes() == p.read_bytes() for p in (b / "wav").iterdir())
    meta = load_meta("a", layout)
    assert len(meta) == 24 * 3 * 2
    splits = {}
    for uid, rec in meta.items():
        splits.setdefault(uid.split("-")[0], set()).add(rec["split"])
    assert all(len(s) == 1 for s in splits.values())  # never split a song
    counts = {s: sum(r["split"] == s for r in meta.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 48, "valid": 48, "test": 48}
    assert {r["y"] for r in meta.values()} == set(synthetic.KEYS)


@pytest.mark.slow
def test_demo_chroma_beats_mfcc_and_a_second_run_reuses_everything(tmp_path):
    env = dict(os.environ, JUKEMIR_CACHE_DIR=str(tmp_path / "cache"))
    argv = [sys.executable, "-m", "jukemir", "demo", "--songs-per-key", "4", "--no-progress"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    scores = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("chroma", "mfcc"):
            scores[cells[0]] = float(cells[1])
    assert scores["chroma"] > scores["mfcc"] + 20, r.stdout
    assert "demo finished" in r.stderr and "features" in r.stderr
    assert "compiles its kernels" in r.stderr  # says what the silent first file is doing
    report = (tmp_path / "cache" / "report" / "index.html").read_text()
    assert "What the metrics mean" in report and "key score (MIREX weighted)" in report
    assert "the paper has no numbers for this dataset" in report

    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    for rep in ("chroma", "mfcc"):  # nothing regenerated, so nothing recomputed or retrained
        assert f"extract {rep}: 0 done, 192 skipped, 0 failed in" in again.stderr, again.stderr
    assert again.stderr.count("12 of them were already trained on these features: reused") == 2
    assert "stale" not in again.stderr and again.stdout == r.stdout


def test_process_synthetic_generates_it_once(isolated_cache, capsys):
    """`jukemir process synthetic` (what reproduce/2_process.sh runs) generates the demo's dataset; a second
    run leaves every file as it was; `download synthetic` has nothing to do."""
    from jukemir.cli import main

    assert main(["process", "synthetic", "--no-progress"]) == 0
    wavs = sorted((isolated_cache / "processed" / "synthetic" / "wav").glob("*.wav"))
    assert len(wavs) == 24 * 6 * 2
    stamps = [p.stat().st_mtime_ns for p in wavs]
    assert main(["process", "synthetic", "--no-progress"]) == 0
    assert [p.stat().st_mtime_ns for p in wavs] == stamps
    assert main(["download", "synthetic"]) == 0 and "nothing to download" in capsys.readouterr().out
