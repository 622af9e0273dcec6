"""The report on the synthetic dataset: every figure referenced, the expected rows, non-empty PNGs."""

import re

import pytest

from jukemir import cache
from jukemir.datasets import synthetic
from jukemir.probe.grid import grid_cfgs
from jukemir.probe.train import train_grid
from jukemir.report import comparison_rows, paper_results, write_report
from jukemir.representations.folder import run_folder


@pytest.fixture
def trained_synthetic():
    data = synthetic.generate(songs_per_key=3, clips_per_song=2, clip_seconds=1.0, progress=False)
    for rep in ("chroma", "mfcc"):
        assert run_folder(rep, data / "wav", cache.representations_dir("synthetic", rep), progress=False).ok
        cfgs = grid_cfgs("synthetic", rep, {"learning_rate": [1e-3], "early_stopping_boredom": [4]})
        train_grid("synthetic", rep, cfgs, progress=False)


def test_report_for_synthetic(trained_synthetic, tmp_path):
    index = write_report(tmp_path / "report", datasets=["synthetic"])
    page = index.read_text()
    figures = sorted(p.name for p in index.parent.glob("*.png"))
    assert len(figures) == 1 + 3 * 2  # bars + (prediction, curve, projection) per representation
    assert any(n.startswith("curve_") for n in figures)
    for name in figures:
        assert f'src="{name}"' in page
        data = (index.parent / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert set(re.findall(r'src="([^"]+)"', page)) == set(figures)
    rows = re.findall(r"<tr><td>synthetic</td><td>score</td><td>(\w+)</td>", page)
    assert sorted(rows) == ["chroma", "mfcc"]
    summary = (index.parent / "summary.md").read_text()
    assert "| chroma |" in summary and "| mfcc |" in summary


def test_paper_numbers_one_file_with_unconfirmed_marked():
    paper = paper_results()
    assert paper["source"].startswith("Castellon")
    jukebox = paper["results"]["jukebox"]
    assert jukebox["gtzan_ff/accuracy"] == {"value": 79.7, "confirmation": "listing"}
    assert jukebox["magnatagatune/auc_roc"]["confirmation"] == "memory"
    row = {"dataset": "magnatagatune", "representation": "jukebox", "headline": ["auc_roc", "ap"], "split": "test",
           "test": {"auc_roc": 0.9, "ap": 0.4}}  # fmt: skip
    comps = comparison_rows([row])
    assert comps[0]["paper"] == 91.5 and comps[0]["confirmed"] is False
    assert abs(comps[0]["difference"] - (90.0 - 91.5)) < 1e-9
