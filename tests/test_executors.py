"""Local vs Ray executors: same outputs; a dead Ray worker is retried without loss or duplication."""

from pathlib import Path

import numpy as np
import pytest
import ray

from jukemir.executors import LocalExecutor, get_executor
from tests.conftest import write_tone
from tests.fake_reps import CrashOnce, Energy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_executor():
    executor = get_executor("ray", num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield executor
    ray.shutdown()


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(12):
        write_tone(d / f"c{i:02d}.wav", seconds=0.5, sr=8000, freq=100 + 37 * i, amplitude=0.1 + 0.05 * i)
    return d


def _outputs(d):
    return {p.name: np.load(p) for p in sorted(Path(d).glob("*.npy"))}


def test_unknown_executor():
    with pytest.raises(ValueError, match="unknown executor"):
        get_executor("slurm")


def test_ray_extraction_equals_local(ray_executor, folder, tmp_path):
    local = LocalExecutor().extract(Energy(), folder, tmp_path / "local", progress=False)
    remote = ray_executor.extract(Energy(), folder, tmp_path / "ray", batch_size=4, progress=False)
    assert local.ok and remote.ok and remote.done == 12
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "ray")
    assert list(a) == list(b) and len(a) == 12
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ray_worker_crash_is_retried(ray_executor, folder, tmp_path):
    marker = tmp_path / "crashed"
    rep = CrashOnce(str(marker), crash_at=3)
    summary = ray_executor.extract(rep, folder, tmp_path / "out", batch_size=4, num_workers=2, progress=False)
    assert marker.exists(), "the worker did not crash: the test proves nothing"
    assert summary.ok and summary.done + summary.skipped == 12
    assert summary.representation == rep.name and summary.output_dir == str(tmp_path / "out")
    out = _outputs(tmp_path / "out")
    reference = LocalExecutor().extract(Energy(), folder, tmp_path / "ref", progress=False)
    assert reference.ok
    ref = _outputs(tmp_path / "ref")
    assert list(out) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    assert not list((tmp_path / "out").glob(".jukemir-tmp-*"))  # nothing half-written left behind


def test_ray_map_in_order(ray_executor):
    assert ray_executor.map(abs, [-3, 2, -1]) == [3, 2, 1]


def _small_dataset(root):
    """A 4-class 'test' dataset (the original's unit-test task) with noisy one-hot features."""
    from jukemir.io import write_json

    rng = np.random.default_rng(0)
    meta = {}
    feats = root / "representations" / "test" / "noisy"
    feats.mkdir(parents=True)
    for i in range(200):
        y = int(rng.integers(0, 4))
        uid = f"{i:04d}"
        split = "train" if i % 10 < 8 else "valid" if i % 10 == 8 else "test"
        meta[uid] = {"split": split, "y": str(y)}
        x = np.eye(4, dtype=np.float32)[y] + rng.normal(0, 0.5, 4).astype(np.float32)
        np.save(feats / f"{uid}.npy", x)
    write_json(root / "processed" / "test" / "meta.json", meta)


def test_ray_grid_equals_local(ray_executor, tmp_path):
    from jukemir.cache import Layout
    from jukemir.probe.grid import grid_cfgs
    from jukemir.probe.train import train_grid

    here, there = Layout(tmp_path / "local"), Layout(tmp_path / "ray")
    _small_dataset(here.root)
    _small_dataset(there.root)
    cfgs = grid_cfgs(
        "test",
        "noisy",
        {"hidden_layer_sizes": [[], [16]], "learning_rate": [1e-3, 1e-2], "early_stopping_boredom": [8]},
    )
    local = train_grid("test", "noisy", cfgs, layout=here, progress=False)
    remote = train_grid("test", "noisy", cfgs, layout=there, executor=ray_executor)
    assert [r["uid"] for r in local] == [r["uid"] for r in remote]
    assert all(r["status"] == "trained" for r in remote)
    for a, b in zip(local, remote):
        assert a["metrics"] == b["metrics"]
