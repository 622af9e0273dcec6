"""Plugins: docs/plugin_example installed into this environment and run.

It is run extract -> probe -> evaluate -> report.

The package is pip-installed (no dependencies, no build isolation) from a copy
of ``docs/plugin_example`` and uninstalled afterwards. It is then named both by
its entry point (``chroma-stats``) and as ``module:Class``.
"""

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from jukemir import cache
from jukemir.cache import Layout
from jukemir.cli import main
from jukemir.datasets import synthetic
from jukemir.representations import get_representation, names, representation_class
from tests.conftest import pip

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "plugin_example"
MODULE_CLASS = "jukemir_chroma_stats:ChromaStats"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    source = tmp_path_factory.mktemp("plugin") / "src"
    shutil.copytree(EXAMPLE, source)
    pip("install", "--no-deps", "--no-build-isolation", str(source))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        pip("uninstall", "--yes", "jukemir-chroma-stats")
        sys.modules.pop("jukemir_chroma_stats", None)


def test_folder_names_are_safe_and_deterministic():
    assert cache.folder_name("chroma") == "chroma"
    assert cache.folder_name("mert-v1-95m") == "mert-v1-95m"
    name = cache.folder_name("hf:facebook/wav2vec2-base")
    assert (
        name.startswith("hf-facebook-wav2vec2-base-") and len(name) == len("hf-facebook-wav2vec2-base-") + 8
    )
    assert cache.folder_name(name) == name == cache.folder_name("hf:facebook/wav2vec2-base")
    assert cache.folder_name("hf:facebook/wav2vec2-base") != cache.folder_name("hf:facebook:wav2vec2-base")
    for weird in ("hf:..", "x:/", "hf:a/../../b", "hf:" + "x" * 300, "é:ü", "a:b:c"):
        folder = cache.folder_name(weird)
        assert cache.check_name(folder) == folder and len(folder) <= 109  # a valid cache name
    for bad in ("..", "a/b", "../../outside", "", "x" * 300):  # no ':': not a representation name
        with pytest.raises(ValueError, match="is not a valid name"):
            cache.folder_name(bad)
    assert Layout().representations("ds", "pkg.mod:Cls").name == cache.folder_name("pkg.mod:Cls")


def test_plugin_end_to_end(installed_plugin, tmp_path, capsys):
    assert "chroma-stats" in names()
    assert representation_class("chroma-stats").__name__ == "ChromaStats"
    rep = get_representation("chroma-stats", hop_length=1024)
    assert rep.provenance()["package"] == {
        "distribution": "jukemir-chroma-stats",
        "version": "0.1.0",
        "module": "jukemir_chroma_stats",
    }
    with pytest.raises(ValueError, match="option.*n_fft.*do not apply"):
        get_representation("chroma-stats", n_fft=4096)

    synthetic.generate(songs_per_key=3, clips_per_song=1, clip_seconds=1.0, progress=False)
    for name in ("chroma-stats", MODULE_CLASS):
        assert (
            main(["extract", name, "--dataset", "synthetic", "--no-progress", "-O", "hop_length=1024"]) == 0
        )
    by_entry = Layout().representations("synthetic", "chroma-stats")
    by_class = Layout().representations("synthetic", MODULE_CLASS)
    assert by_class.name == cache.folder_name(MODULE_CLASS) != MODULE_CLASS
    uids = sorted(p.stem for p in by_entry.glob("*.npy"))
    assert len(uids) == 72 and uids == sorted(p.stem for p in by_class.glob("*.npy"))
    for uid in uids[:5]:
        np.testing.assert_array_equal(np.load(by_entry / f"{uid}.npy"), np.load(by_class / f"{uid}.npy"))
    record = json.loads((by_class / ".jukemir" / "provenance" / f"{uids[0]}.json").read_text())
    assert record["representation"] == MODULE_CLASS and record["options"] == {"hop_length": 1024}
    assert (
        record["package"]["distribution"] == "jukemir-chroma-stats"
        and record["package"]["version"] == "0.1.0"
    )

    # a second run skips every output; other options make them stale
    assert (
        main(["extract", "chroma-stats", "--dataset", "synthetic", "--no-progress", "-O", "hop_length=1024"])
        == 0
    )
    assert "0 done, 72 skipped" in capsys.readouterr().err

    for name in ("chroma-stats", MODULE_CLASS):
        configs = []
        for lr in (1e-3, 3e-3):
            cfg = {
                "dataset": "synthetic",
                "representation": name,
                "learning_rate": lr,
                "early_stopping_boredom": 4,
            }
            configs.append(tmp_path / f"{cache.folder_name(name)}-{lr}.json")
            configs[-1].write_text(json.dumps(cfg))
        assert main(["probe", "synthetic", name, "--config", *map(str, configs), "--no-progress"]) == 0
    assert main(["evaluate", "--dataset", "synthetic", "--representation", MODULE_CLASS]) == 0
    table = capsys.readouterr().out
    assert cache.folder_name(MODULE_CLASS) in table and "| chroma-stats |" not in table
    assert main(["report", "--dataset", "synthetic", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "chroma-stats" in out and cache.folder_name(MODULE_CLASS) in out
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    selected = {s["representation"]: s for s in results["provenance"]["selected"]}
    assert set(selected) == {"chroma-stats", cache.folder_name(MODULE_CLASS)}
    records = selected[cache.folder_name(MODULE_CLASS)]["features"]["records"]
    assert records[0]["package"]["distribution"] == "jukemir-chroma-stats"
    assert records[0]["representation"] == MODULE_CLASS


@pytest.mark.ray
def test_plugin_on_ray(installed_plugin, tone_folder, tmp_path):
    import ray

    from jukemir.executors import get_executor

    executor = get_executor("ray", num_cpus=2)
    try:
        summary = executor.extract(
            "chroma-stats", tone_folder, tmp_path / "ray", batch_size=5, progress=False
        )
    finally:
        ray.shutdown()
    assert summary.ok and summary.done == 5
    rep = get_representation("chroma-stats")
    for wav in sorted(tone_folder.glob("*.wav")):
        np.testing.assert_allclose(
            np.load(tmp_path / "ray" / f"{wav.stem}.npy"), rep(rep.load(wav)), rtol=1e-6
        )
    record = json.loads((tmp_path / "ray" / ".jukemir" / "provenance" / "t0.json").read_text())
    assert record["package"]["distribution"] == "jukemir-chroma-stats"
