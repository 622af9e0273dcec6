"""Outputs carry provenance: a stale or foreign output is detected and recomputed, never reused."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import soundfile as sf

from jukemir.representations.folder import STATE_DIR

from .fakes import Slow
from .helpers import (
    assert_complete,
    cli_env,
    make_probe_dataset,
    outputs,
    records,
    run_jukemir,
    tally,
    write_tones,
)

pytestmark = pytest.mark.fault


def _extract(folder, out, *options, env=None):
    r = run_jukemir("extract", "slow", folder, out, "--no-progress", *options, env=env)
    assert r.returncode == 0, r.stderr
    return r.stderr


def _inodes(out):
    return {p.name: p.stat().st_ino for p in out.glob("*.npy")}


def test_stale_outputs_are_recomputed(tmp_path):
    folder = write_tones(tmp_path / "in", 6, seed=12)
    out = tmp_path / "out"
    assert "6 done" in _extract(folder, out)
    first, before = outputs(out), _inodes(out)
    rep = Slow()

    # a changed source: only its output is recomputed, from the new audio
    sf.write(str(folder / "c02.wav"), np.full(3000, 0.25, np.float32), 8000, subtype="PCM_16")
    assert "1 done, 5 skipped, 0 failed, 1 stale recomputed" in _extract(folder, out)
    np.testing.assert_array_equal(np.load(out / "c02.npy"), rep(rep.load(folder / "c02.wav")))
    after = _inodes(out)
    assert {k: v for k, v in after.items() if k != "c02.npy"} == {
        k: v for k, v in before.items() if k != "c02.npy"
    }

    # the same bytes with a new mtime (e.g. re-decoded): recomputed, to the same bytes
    st = os.stat(folder / "c03.wav")
    os.utime(folder / "c03.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert "1 stale recomputed" in _extract(folder, out)
    assert (out / "c03.npy").read_bytes() == first["c03.npy"]

    # other options, then back: every output is recomputed each time
    assert "6 done, 0 skipped, 0 failed, 6 stale recomputed" in _extract(folder, out, "--model", "double")
    np.testing.assert_array_equal(np.load(out / "c00.npy"), 2 * np.load(io.BytesIO(first["c00.npy"])))
    assert all(r["options"] == {"model": "double"} for r in records(out).values())
    assert "6 stale recomputed" in _extract(folder, out)
    assert (out / "c00.npy").read_bytes() == first["c00.npy"]

    # another version of the representation
    assert "6 stale recomputed" in _extract(folder, out, env=cli_env(FAULT_VERSION="2"))
    assert all(r["version"] == "2" for r in records(out).values())
    tally("stale", 1 + 1 + 6 + 6 + 6)


def test_foreign_and_tampered_outputs(tmp_path):
    folder = write_tones(tmp_path / "in", 6, seed=13)
    ref = tmp_path / "ref"
    _extract(folder, ref)
    reference, reference_records = outputs(ref), records(ref)

    # another representation's outputs, of the same shape, in the folder: all recomputed
    out = tmp_path / "out"
    r = run_jukemir("extract", "batchstats", folder, out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "6 stale recomputed" in _extract(folder, out)
    assert_complete(out, reference, reference_records)

    # tampered bytes (same shape), a record of another file, a truncated array, a wrong shape
    np.save(out / "c00.npy", np.zeros(8, np.float32))
    record = json.loads((out / STATE_DIR / "provenance" / "c02.json").read_text())
    (out / STATE_DIR / "provenance" / "c01.json").write_text(json.dumps(record))
    (out / "c03.npy").write_bytes(reference["c03.npy"][:100])
    np.save(out / "c04.npy", np.zeros(9, np.float32))
    (out / STATE_DIR / "provenance" / "c04.json").unlink()
    assert "4 done, 2 skipped, 0 failed, 4 stale recomputed" in _extract(folder, out)
    assert_complete(out, reference, reference_records)

    # an output without a record (dropped-in precomputed features) is kept, and said to be
    np.save(out / "c05.npy", np.ones(8, np.float32))
    (out / STATE_DIR / "provenance" / "c05.json").unlink()
    assert "1 without provenance kept" in _extract(folder, out)
    np.testing.assert_array_equal(np.load(out / "c05.npy"), np.ones(8))
    assert "6 done" in _extract(folder, out, "--overwrite")
    assert (out / "c05.npy").read_bytes() == reference["c05.npy"]
    tally("stale", 6 + 4 + 1)


def test_probe_runs_of_other_features_are_retrained(capsys):
    """A finished probe run records the data it saw; re-extracted features make it stale, not reused."""
    from jukemir.io import save_npy
    from jukemir.probe.evaluate import evaluate_pair
    from jukemir.probe.grid import grid_cfgs
    from jukemir.probe.train import train_grid

    features = make_probe_dataset("faulty", "slow", n=45)
    cfgs = grid_cfgs("faulty", "slow", {"learning_rate": [1e-2, 1e-3], "early_stopping_boredom": [3]})
    assert {r["status"] for r in train_grid("faulty", "slow", cfgs, progress=False)} == {"trained"}
    assert {r["status"] for r in train_grid("faulty", "slow", cfgs, progress=False)} == {"skipped"}
    evaluate_pair("faulty", "slow")

    save_npy(features / "u003.npy", np.zeros(8, np.float32))  # one feature re-extracted differently
    with pytest.raises(ValueError, match="trained on other features or metadata"):
        evaluate_pair("faulty", "slow")
    capsys.readouterr()
    assert {r["status"] for r in train_grid("faulty", "slow", cfgs, progress=False)} == {"trained"}
    assert "2 finished run(s) were trained on other features" in capsys.readouterr().err
    assert evaluate_pair("faulty", "slow")["num_runs"] == 2
    tally("stale", 2)
