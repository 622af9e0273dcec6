"""The report: every figure referenced and a real PNG, the expected rows, the paper's numbers marked."""

import json
import os
import re

import numpy as np
import pytest

from jukemir.cache import Layout
from jukemir.cli import main
from jukemir.datasets import MTT_TOP50, synthetic
from jukemir.io import save_npy, write_json
from jukemir.probe.grid import grid_cfgs
from jukemir.probe.train import train_grid
from jukemir.report import comparison_rows, comparison_table, paper_results, write_report
from jukemir.representations.folder import run_folder

PNG = b"\x89PNG\r\n\x1a\n"
TINY_GRID = {"learning_rate": [1e-3, 3e-3], "early_stopping_boredom": [4]}


def check_figures(index):
    """Every PNG beside index.html is referenced by it, every reference exists, and each is a real PNG."""
    page = index.read_text()
    figures = sorted(p.name for p in index.parent.glob("*.png"))
    assert set(re.findall(r'<img src="([^"]+)"', page)) == set(figures)
    for name in figures:
        data = (index.parent / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 300 < width < 2500 and 250 < height < 2500, (name, width, height)
    return page, figures


def table_rows(page):
    return re.findall(
        r"<tr><td>(\w+)</td><td>(\w+)</td><td>(\w+)</td><td>(-?[\d.]+)</td><td>(.*?)</td><td>(.*?)</td></tr>",
        page,
    )


@pytest.fixture
def trained_synthetic():
    data = synthetic.generate(songs_per_key=3, clips_per_song=2, clip_seconds=1.5, progress=False)
    for rep in ("chroma", "mfcc"):
        assert run_folder(rep, data / "wav", Layout().representations("synthetic", rep), progress=False).ok
        train_grid("synthetic", rep, grid_cfgs("synthetic", rep, TINY_GRID), progress=False)


def test_report_for_synthetic(trained_synthetic, tmp_path):
    index = write_report(tmp_path / "report", datasets=["synthetic"])
    page, figures = check_figures(index)
    expected = ["bars_synthetic.png"] + [
        f"{kind}_synthetic_{rep}.png" for rep in ("chroma", "mfcc") for kind in ("curve", "pred", "proj")
    ]
    assert figures == sorted(expected)
    rows = table_rows(page)
    assert [(ds, metric, rep) for ds, metric, rep, *_ in rows] == [
        ("synthetic", "score", "chroma"),
        ("synthetic", "score", "mfcc"),
    ]
    results = json.loads((index.parent / "results.json").read_text())
    for (*_, ours, paper, diff), row in zip(rows, results["rows"]):
        assert float(ours) == pytest.approx(100 * row["test"]["score"], abs=0.0501)
        assert paper == diff == "–"  # the paper has no synthetic dataset
    selected = results["provenance"]["selected"]
    assert [s["cfg"]["representation"] for s in selected] == ["chroma", "mfcc"] and selected[0][
        "num_runs"
    ] == 2
    features = selected[0]["features"]
    assert features["features"] == features["with_record"] == 144
    chroma = {"representation": "chroma", "version": "2", "options": {"handcrafted_librosa": "0.8.1"}}
    assert features["records"] == [dict(chroma, shape=[72], count=144)]
    summary = (index.parent / "summary.md").read_text()
    assert "| synthetic | score | chroma |" in summary and "| mfcc |" in summary


def fake_dataset(name, rep, n_per_split, make_item, seed):
    """meta.json and features of a built-in dataset's name; make_item(rng, split, j) -> (x, y)."""
    rng = np.random.default_rng(seed)
    meta = {}
    for split, n in zip(("train", "valid", "test"), n_per_split):
        for j in range(n):
            x, y = make_item(rng, split, j)
            meta[f"{split}{j:03d}"] = {"split": split, "y": y}
            save_npy(Layout().representations(name, rep) / f"{split}{j:03d}.npy", x.astype(np.float32))
    write_json(Layout().processed(name) / "meta.json", meta)


def test_report_multilabel_regression_and_cli(tmp_path, capsys):
    W = np.random.default_rng(1).normal(size=(12, 50))

    def tags(rng, split, j):  # every tag present and absent in every split
        x = rng.normal(size=12)
        on = (x @ W > 2.0) | (np.arange(50) == j % 50)
        return x, [t for t, b in zip(MTT_TOP50, on) if b]

    def emotion(rng, split, j):
        x = rng.normal(size=12)
        return x, [float(x[:3].sum() / 1.7 + 0.5 * rng.normal()), float(x[3] + 0.8 * rng.normal())]

    fake_dataset("magnatagatune", "mfcc", (100, 50, 50), tags, seed=0)
    fake_dataset("emomusic", "mfcc", (100, 50, 50), emotion, seed=0)
    for ds in ("magnatagatune", "emomusic"):
        train_grid(ds, "mfcc", grid_cfgs(ds, "mfcc", TINY_GRID), progress=False)

    assert main(["report", "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    index = tmp_path / "report" / "index.html"
    assert f"report: {index}" in printed
    page, figures = check_figures(index)
    assert len(figures) == 2 + 3 * 2
    rows = {
        (ds, metric): (float(ours), paper, diff) for ds, metric, rep, ours, paper, diff in table_rows(page)
    }
    assert set(rows) == {
        ("magnatagatune", "auc_roc"),
        ("magnatagatune", "ap"),
        ("emomusic", "arousal_r2"),
        ("emomusic", "valence_r2"),
    }
    paper = paper_results()["results"]["mfcc"]
    for (ds, metric), (ours, cell, diff) in rows.items():
        published = paper[f"{ds}/{metric}"]
        assert published["confirmation"] == "memory"
        assert (
            cell == '<span class="unconfirmed" title="not yet confirmed from the paper">'
            f"{published['value']:.1f}*</span>"
        )
        assert float(diff) == pytest.approx(ours - published["value"], abs=0.11)
    assert "* UNCONFIRMED" in page
    assert (
        "| magnatagatune | auc_roc | mfcc |" in printed and "86.1*" in printed
    )  # the table jukemir report prints


def _imported_pair(layout, seed, labels, dim):
    """An imported 3-class dataset ``mine`` x representation ``hf:org/feat`` in ``layout``: dataset.json (the
    spec, read from the layout like any imported dataset's), meta.json and ``dim``-d features of 90 items."""
    rng = np.random.default_rng(seed)
    spec = {"name": "mine", "task": "multiclass", "labels": labels, "num_outputs": 3, "primary": "accuracy"}
    write_json(layout.processed("mine") / "dataset.json", spec)
    meta = {}
    for i in range(90):
        y = i % 3
        meta[f"u{i:03d}"] = {"split": ["train", "train", "train", "valid", "test"][i % 5], "y": labels[y]}
        x = 2 * np.eye(3, dim)[y] + 0.5 * rng.standard_normal(dim)
        save_npy(layout.representations("mine", "hf:org/feat") / f"u{i:03d}.npy", x.astype(np.float32))
    write_json(layout.meta("mine"), meta)


_WATCHED = {"root": None, "seen": []}  # an audit hook (installed once) records what is opened or listed there


def _audit(event, args):
    root = _WATCHED["root"]
    if root is not None and event in ("open", "os.scandir", "os.listdir", "glob.glob") and args:
        path = args[0]
        if isinstance(path, (str, os.PathLike)) and (os.fspath(path) + os.sep).startswith(root + os.sep):
            _WATCHED["seen"].append((event, os.fspath(path)))


def test_evaluate_and_report_on_another_layout_read_nothing_of_the_default_cache(
    isolated_cache, tmp_path, monkeypatch
):
    """train_grid, evaluate and write_report given ``layout=Layout(elsewhere)`` read and write only there.

    The default cache ($JUKEMIR_CACHE_DIR) holds a decoy of the same pair (other labels, 5-d features, one
    run of another config), so that reading any of it would change the rows or fail; and an audit hook
    records every file opened and folder listed under it while evaluating and reporting: none may be. The
    report draws its figures from the probes and features the evaluation loaded (``evaluations`` rows; reading
    them again is made to fail) and its provenance names the other cache.
    """
    import sys

    from jukemir.probe import data as data_module
    from jukemir.probe import run as run_module
    from jukemir.probe.evaluate import evaluate, evaluations

    _imported_pair(Layout(), seed=1, labels=["x", "y", "z"], dim=5)
    train_grid(
        "mine",
        "hf:org/feat",
        grid_cfgs("mine", "hf:org/feat", {"learning_rate": [1e-2], "early_stopping_boredom": [4]}),
        progress=False,
    )
    other = Layout(tmp_path / "elsewhere")
    _imported_pair(other, seed=0, labels=["a", "b", "c"], dim=8)
    train_grid(
        "mine", "hf:org/feat", grid_cfgs("mine", "hf:org/feat", TINY_GRID), layout=other, progress=False
    )
    before = sorted((str(p), p.stat().st_mtime_ns) for p in isolated_cache.rglob("*"))

    if not getattr(sys.modules[__name__], "_audit_installed", False):
        sys.addaudithook(_audit)
        globals()["_audit_installed"] = True
    _WATCHED.update(root=str(isolated_cache), seen=[])
    try:
        rows = evaluate(layout=other)
        index = write_report(tmp_path / "report", layout=other)
        loaded = list(evaluations(layout=other))
        with monkeypatch.context() as m:
            for module, name in ((run_module, "load_probe_dir"), (data_module, "load_probe_data")):
                m.setattr(
                    module, name, lambda *a, **k: pytest.fail("the report read again what evaluate loaded")
                )
            again = write_report(tmp_path / "again", rows=loaded, layout=other)
    finally:
        _WATCHED["root"] = None
    assert _WATCHED["seen"] == []
    assert sorted((str(p), p.stat().st_mtime_ns) for p in isolated_cache.rglob("*")) == before

    assert [(r["dataset"], r["representation"], r["num_runs"]) for r in rows] == [
        ("mine", "hf-org-feat-dc8ec913", 2)
    ]
    assert rows[0]["cfg"]["learning_rate"] in TINY_GRID["learning_rate"] and rows[0]["test"]["accuracy"] > 0.5
    for page in (index, again):
        results = json.loads((page.parent / "results.json").read_text())
        assert results["rows"] == json.loads(json.dumps(rows))
        provenance = results["provenance"]
        assert provenance["cache"] == str(other.root)
        features = provenance["selected"][0]["features"]
        assert (
            features["folder"] == str(other.representations("mine", "hf:org/feat"))
            and features["features"] == 90
        )
        check_figures(page)


def test_paper_numbers_one_file_with_unconfirmed_marked():
    paper = paper_results()
    assert paper["source"].startswith("Castellon")
    jukebox = paper["results"]["jukebox"]
    assert jukebox["gtzan_ff/accuracy"] == {"value": 79.7, "confirmation": "listing"}
    assert jukebox["magnatagatune/auc_roc"]["confirmation"] == "memory"
    rows = [
        {
            "dataset": "magnatagatune",
            "representation": "jukebox",
            "headline": ["auc_roc", "ap"],
            "split": "test",
            "test": {"auc_roc": 0.9, "ap": 0.4},
        },
        {
            "dataset": "gtzan_ff",
            "representation": "jukebox",
            "headline": ["accuracy"],
            "split": "test",
            "test": {"accuracy": 0.8},
        },
        {
            "dataset": "mine",
            "representation": "jukebox",
            "headline": ["accuracy"],
            "split": "test",
            "test": {"accuracy": 0.5},
        },
    ]
    comps = comparison_rows(rows)
    assert comps[0]["paper"] == 91.5 and comps[0]["confirmed"] is False
    assert comps[0]["difference"] == pytest.approx(90.0 - 91.5)
    assert comps[2]["confirmation"] == "listing" and comps[2]["confirmed"] is False
    assert comps[3]["paper"] is None and comps[3]["difference"] is None
    table = comparison_table(rows)
    assert "| magnatagatune | auc_roc | jukebox | 90.0 | 91.5* | -1.5 |" in table
    assert "| gtzan_ff | accuracy | jukebox | 80.0 | 79.7† | +0.3 |" in table
    assert "| mine | accuracy | jukebox | 50.0 | – | – |" in table
    assert "\n* UNCONFIRMED" in table and "\n† value also appears in the third-party" in table


def test_report_without_runs_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished probe runs"):
        write_report(tmp_path / "report")
    assert main(["report", "--out", str(tmp_path / "report")]) != 0


def test_side_by_side_with_the_papers_six():
    """Any number of representations become columns beside the paper's six published ones."""
    from jukemir.report import side_by_side, side_by_side_table

    def row(dataset, rep, **metrics):
        return {
            "dataset": dataset,
            "representation": rep,
            "split": "test",
            "headline": list(metrics),
            "test": metrics,
        }

    rows = [
        row("gtzan_ff", "mert-v1-95m", accuracy=0.8),
        row("gtzan_ff", "hf-facebook-wav2vec2-base-f9544348", accuracy=0.5),
        row("gtzan_ff", "jukebox", accuracy=0.79),
        row("synthetic", "mert-v1-95m", score=0.4),
    ]
    table = side_by_side(rows)
    paper = paper_results()["results"]
    assert [c for c, kind in table["columns"] if kind == "paper"] == list(paper)
    assert [c for c, kind in table["columns"] if kind == "ours"] == [
        "mert-v1-95m",
        "hf-facebook-wav2vec2-base-f9544348",
        "jukebox",
    ]
    lines = {(ln["dataset"], ln["metric"]): ln["cells"] for ln in table["lines"]}
    assert list(lines) == [("gtzan_ff", "accuracy"), ("synthetic", "score")]
    gtzan = lines[("gtzan_ff", "accuracy")]
    assert gtzan[:6] == [paper[r]["gtzan_ff/accuracy"]["value"] for r in paper]
    assert gtzan[6:] == pytest.approx([80.0, 50.0, 79.0])
    assert lines[("synthetic", "score")] == [None] * 6 + [pytest.approx(40.0), None, None]
    text = side_by_side_table(rows)
    assert "| dataset | metric | jukebox (paper) | clmr (paper) |" in text and "| mert-v1-95m |" in text
    assert "| synthetic | score | – | – | – | – | – | – | 40.0 | – | – |" in text
