"""SIGKILL extraction at every crash point and at random moments.

Then resume and compare with an uninterrupted run.
"""

from __future__ import annotations

import random
import time

import pytest

from jukemir.representations.folder import run_folder

from .fakes import BatchStats, Slow
from .helpers import (
    assert_complete,
    assert_no_corrupt,
    cli_env,
    outputs,
    records,
    run_forked,
    run_jukemir,
    sigkill,
    start_jukemir,
    tally,
    wait_for,
    write_tones,
)

pytestmark = pytest.mark.fault


def _valid_inodes(out_dir, reference) -> dict[str, int]:
    """Inodes of the outputs that are already complete (a rewrite would give a new inode)."""
    return {
        name: (out_dir / name).stat().st_ino
        for name, data in outputs(out_dir).items()
        if data == reference[name]
    }


@pytest.mark.parametrize(
    "rep_cls, batch_size", [(Slow, None), (BatchStats, 3)], ids=["independent", "batch-dependent"]
)
def test_every_crash_point(tmp_path, rep_cls, batch_size):
    """Kill a run just before each of its file-system steps in turn; the resumed run always matches."""
    folder = write_tones(tmp_path / "in", 7, seed=1)
    kwargs = dict(batch_size=batch_size, progress=False, workers=1)
    ref_dir = tmp_path / "ref"
    assert run_folder(rep_cls(), folder, ref_dir, **kwargs).ok
    reference, reference_records = outputs(ref_dir), records(ref_dir)

    killed, steps = run_forked(lambda: run_folder(rep_cls(), folder, tmp_path / "count", **kwargs))
    assert not killed and steps > 7 * 4, steps
    kills = 0
    for k in range(1, steps + 1):
        out = tmp_path / f"k{k}"
        killed, _ = run_forked(lambda out=out: run_folder(rep_cls(), folder, out, **kwargs), crash_at=k)
        assert killed, f"crash point {k} of {steps} was not reached"
        kills += 1
        assert_no_corrupt(out, reference)
        done_before = _valid_inodes(out, reference)
        report = run_folder(rep_cls(), folder, out, **kwargs)
        assert report.ok and report.busy == 0, report.summary()
        assert_complete(out, reference, reference_records)
        assert {n: (out / n).stat().st_ino for n in done_before} == done_before, f"crash point {k}: rewritten"
    tally("kills", kills)
    tally("outputs_checked", kills * len(reference))


@pytest.mark.slow
def test_sigkill_cli_at_random_points(tmp_path):
    """``jukemir extract`` killed again and again at random moments (seeded) resumes to the same bytes."""
    n = 32
    folder = write_tones(tmp_path / "in", n, seed=2)
    ref_dir = tmp_path / "ref"
    r = run_jukemir("extract", "slow", folder, ref_dir, "--no-progress")
    assert r.returncode == 0, r.stderr
    reference, reference_records = outputs(ref_dir), records(ref_dir)
    assert len(reference) == n

    rng = random.Random(8)
    env = cli_env(FAULT_DELAY=0.01)
    kills = 0
    for sequence in range(5):
        out = tmp_path / f"out{sequence}"
        done_before: dict = {}
        for _ in range(7):
            proc = start_jukemir(
                "extract", "slow", folder, out, "--no-progress", "--workers", rng.choice([1, 2]), env=env
            )
            # kill once `target` outputs exist, `jitter` seconds later:
            # anywhere from start-up to the last write
            target, jitter = rng.randint(0, n), rng.uniform(0, 0.02)
            if wait_for(lambda out=out, target=target: len(list(out.glob("*.npy"))) >= target, proc):
                time.sleep(jitter)
            if not sigkill(proc):  # it finished first
                assert proc.returncode == 0
                break
            kills += 1
            assert_no_corrupt(out, reference)
            for name, inode in done_before.items():
                assert (out / name).stat().st_ino == inode, (
                    f"{name} was completed, then rewritten by a resumed run"
                )
            done_before = _valid_inodes(out, reference)
        r = run_jukemir("extract", "slow", folder, out, "--no-progress")
        assert r.returncode == 0, r.stderr
        assert_complete(out, reference, reference_records)
    assert kills >= 15, kills
    tally("kills", kills)
    tally("outputs_checked", 5 * n)


@pytest.mark.slow
def test_sigkill_real_mfcc_cli(tmp_path):
    """The plain ``python -m jukemir extract mfcc``, killed 4 times.

    Mixed sample rates, 2 decoding threads.
    """
    n = 20
    folder = tmp_path / "in"
    for i, sr in enumerate((22050, 16000, 44100, 8000)):
        write_tones(folder / str(sr), n // 4, seed=10 + i, sr=sr, seconds=(0.5, 1.0))
        for p in (folder / str(sr)).iterdir():
            p.rename(folder / f"{sr}_{p.name}")
        (folder / str(sr)).rmdir()
    args = ("extract", "mfcc", folder)
    r = run_jukemir(*args, tmp_path / "ref", "--no-progress", fakes=False)
    assert r.returncode == 0, r.stderr
    reference, reference_records = outputs(tmp_path / "ref"), records(tmp_path / "ref")
    out = tmp_path / "out"
    rng = random.Random(4)
    kills = 0
    for target in sorted(rng.sample(range(1, n), 4)):
        proc = start_jukemir(*args, out, "--no-progress", "--workers", 2, fakes=False)
        if wait_for(lambda target=target: len(list(out.glob("*.npy"))) >= target, proc):
            time.sleep(rng.uniform(0, 0.05))
        kills += sigkill(proc)
        assert_no_corrupt(out, reference)
    r = run_jukemir(*args, out, "--no-progress", fakes=False)
    assert r.returncode == 0, r.stderr
    assert_complete(out, reference, reference_records)
    assert kills >= 3
    tally("kills", kills)
    tally("outputs_checked", n)


@pytest.mark.parametrize("command", ["extract", "probe"])
def test_sigterm_is_a_clean_stop(tmp_path, command):
    """SIGTERM (a scheduler's or `kill`'s) stops extract and probe like Ctrl-C: one message, exit 143, no
    traceback, nothing half-written or locked; the next run completes."""
    import signal

    from jukemir.cache import Layout
    from jukemir.probe.grid import grid_cfgs, write_grid_configs

    from .helpers import make_probe_dataset, temporaries

    if command == "extract":
        folder = write_tones(tmp_path / "in", 20, seed=2)
        out = tmp_path / "out"
        args = ("extract", "slow", folder, out, "--no-progress")
        env = cli_env(FAULT_DELAY=0.1)

        def started():
            return len(list(out.glob("*.npy"))) >= 2
    else:
        make_probe_dataset("termed", "slow", n=150)
        grid = {
            "hidden_layer_sizes": [[], [64]],
            "learning_rate": [1e-3, 1e-4],
            "early_stopping_boredom": [400],
        }
        configs = [str(p) for p in write_grid_configs(grid_cfgs("termed", "slow", grid), tmp_path / "cfgs")]
        out = Layout().probes("termed", "slow")
        args = ("probe", "termed", "slow", "--config", *configs, "--no-progress", "--serial")
        env = cli_env(OMP_NUM_THREADS=1)

        def started():
            return len(list(out.glob("*/metrics.json"))) >= 1

    proc = start_jukemir(*args, env=env)
    assert wait_for(started, proc, timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert not temporaries(out)
    assert not [p for p in out.rglob("*.lock") if p.parent.name in ("locks", ".claims")]
    r = run_jukemir(*args, env=cli_env())
    assert r.returncode == 0, r.stderr
    tally("kills")
