"""SIGKILL ``jukemir probe`` during grid training; the re-run gives the uninterrupted run's metrics and
weights, and a half-saved run folder is never taken for a finished one."""

from __future__ import annotations

import random
import shutil
import time

import pytest
import torch

from jukemir.cache import Layout
from jukemir.io import read_json
from jukemir.probe.grid import grid_cfgs, write_grid_configs
from jukemir.probe.run import RUN_FILES

from .helpers import (
    cli_env,
    make_probe_dataset,
    probe_args,
    run_jukemir,
    sigkill,
    start_jukemir,
    tally,
    wait_for,
)

pytestmark = pytest.mark.fault
GRID = {
    "hidden_layer_sizes": [[], [64]],
    "learning_rate": [1e-3, 3e-4],
    "dropout_p": [0.25, 0.5, 0.75],
    "early_stopping_boredom": [100],
}


def _runs(root) -> dict:
    """uid -> (metrics, state dict) of the finished runs under ``root``.

    Asserts each finished run is whole.
    """
    found = {}
    for metrics in sorted(root.glob("*/metrics.json")):
        run = metrics.parent
        missing = [name for name in RUN_FILES if not (run / name).is_file()]
        assert not missing, (
            f"{run} has metrics.json but lacks {missing}: a partial run would pass for finished"
        )
        found[run.name] = (read_json(metrics), torch.load(run / "probe.pt", weights_only=True))
    return found


def _same(run, ref) -> bool:
    (m1, s1), (m2, s2) = run, ref
    return m1 == m2 and s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.slow
@pytest.mark.parametrize("serial, kills", [(False, 4), (True, 2)], ids=["vectorised", "serial"])
def test_sigkill_grid_training(tmp_path, serial, kills):
    make_probe_dataset("faulty", "slow", n=150)
    configs = [str(p) for p in write_grid_configs(grid_cfgs("faulty", "slow", GRID), tmp_path / "cfgs")]
    configs = configs[:4] if serial else configs  # the original's one-config-at-a-time loop is slower
    args = probe_args("faulty", "slow", configs, *(["--serial"] if serial else []))
    runs_dir = Layout().probes("faulty", "slow")
    env = cli_env(OMP_NUM_THREADS=1)  # tiny models; and spinning OpenMP threads crawl on a busy machine
    r = run_jukemir(*args, env=env)
    assert r.returncode == 0, r.stderr
    reference = _runs(runs_dir)
    assert len(reference) == len(configs)
    shutil.rmtree(runs_dir)

    rng = random.Random(11 + serial)
    done, killed = 0, 0
    while killed < kills and done < len(configs):
        target = rng.randint(min(done, len(configs) - 2), len(configs) - 2)
        proc = start_jukemir(*args, env=env)
        if wait_for(
            lambda target=target: len(list(runs_dir.glob("*/metrics.json"))) >= target, proc, poll=0.001
        ):
            time.sleep(rng.uniform(0, 0.1))
        if not sigkill(proc):
            break  # the last runs finished within the jitter: nothing left to kill
        killed += 1
        finished = _runs(runs_dir)
        for uid, run in finished.items():
            assert _same(run, reference[uid]), (
                f"run {uid}, saved before the kill, differs from the uninterrupted one"
            )
        done = len(finished)
    assert killed >= 1
    r = run_jukemir(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert f"{len(configs) - done} trained, {done} already done" in r.stdout
    final = _runs(runs_dir)
    assert final.keys() == reference.keys()
    different = [uid for uid in final if not _same(final[uid], reference[uid])]
    assert not different, f"resumed runs differ from the uninterrupted grid: {different}"
    assert not list(runs_dir.rglob(".jukemir-tmp-*"))
    tally("kills", killed)
    tally("outputs_checked", len(configs))


def test_resumed_stack_trains_like_the_full_one():
    """The vectorised trainer stacks configs; after a kill the unfinished ones are stacked without the
    finished ones. Each config must train the same whatever its stack mates (dropout on or off)."""
    from jukemir.probe.config import ProbeConfig
    from jukemir.probe.data import load_probe_data
    from jukemir.probe.stack import train_probes

    make_probe_dataset("faulty", "slow", n=90)
    data = load_probe_data("faulty", "slow", verbose=False)

    def cfg(**kwargs):
        return ProbeConfig(
            dataset="faulty",
            representation="slow",
            hidden_layer_sizes=[16],
            early_stopping_boredom=4,
            **kwargs,
        )

    mates = [
        cfg(dropout_p=0.5, learning_rate=1e-2),
        cfg(dropout_input=False, dropout_p=0.25),
        cfg(dropout_p=0.0, data_standardization=False),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for config in [cfg(dropout_input=False, dropout_p=0.0), cfg(dropout_p=0.0), cfg(dropout_input=False)]:
            alone = train_probes([config], data, progress=False)[0].model.state_dict()
            stacked = train_probes([*mates, config], data, progress=False)[-1].model.state_dict()
            assert all(torch.equal(alone[k], stacked[k]) for k in alone), (
                f"{dict(config)} depends on its stack"
            )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("serial", [False, True], ids=["vectorised", "serial"])
def test_concurrent_probe_workers_share_the_grid(tmp_path, serial):
    """Three `jukemir probe` workers started together on one grid: every config is trained exactly once
    (the trained counts they report add up to the grid), and the runs equal one worker's."""
    make_probe_dataset("shared", "slow", n=150)
    grid = dict(GRID, hidden_layer_sizes=[[], [64], [32], [16]])  # four stacks to share
    configs = [str(p) for p in write_grid_configs(grid_cfgs("shared", "slow", grid), tmp_path / "cfgs")]
    configs = configs[::3] if serial else configs
    args = probe_args("shared", "slow", configs, *(["--serial"] if serial else []))
    env = cli_env(OMP_NUM_THREADS=1)
    runs_dir = Layout().probes("shared", "slow")
    r = run_jukemir(*args, env=env)
    assert r.returncode == 0, r.stderr
    reference = _runs(runs_dir)
    shutil.rmtree(runs_dir)

    procs = [start_jukemir(*args, env=env) for _ in range(3)]
    trained = 0
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        trained += int(out.split(": ")[1].split(" trained")[0])
    assert trained == len(configs), f"{trained} trainings for {len(configs)} configs"
    runs = _runs(runs_dir)
    assert runs.keys() == reference.keys() and all(_same(runs[u], reference[u]) for u in reference)
    tally("concurrent", 3)
    tally("outputs_checked", len(reference))


@pytest.mark.slow
@pytest.mark.ray
def test_sigkilled_ray_driver_leaves_no_ray_processes(tmp_path):
    """`jukemir probe --executor ray` starts a local Ray; SIGKILL the driver mid-grid: nothing it started
    (GCS, raylet, agents, workers) keeps running."""
    from .helpers import assert_no_survivors, children

    make_probe_dataset("rayed", "slow", n=150)
    grid = dict(GRID, early_stopping_boredom=[1000], learning_rate=[1e-3, 3e-4, 1e-4])
    configs = [str(p) for p in write_grid_configs(grid_cfgs("rayed", "slow", grid), tmp_path / "cfgs")]
    proc = start_jukemir(
        *probe_args("rayed", "slow", configs, "--executor", "ray"), env=cli_env(OMP_NUM_THREADS=1)
    )
    seen: set = set()

    def ray_running():
        seen.update(children(proc.pid))
        return any(p.name.startswith("ray") or "raylet" in p.name for p in _named(seen)) and len(seen) >= 4

    assert wait_for(ray_running, proc, timeout=120), proc.communicate()
    time.sleep(2)
    seen.update(children(proc.pid))
    assert sigkill(proc)
    assert_no_survivors(seen, timeout=20)
    tally("kills")


def _named(pids):
    from pathlib import Path

    class P:
        def __init__(self, pid):
            try:
                self.name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                self.name = ""

    return [P(p) for p in pids]
