"""Several workers on one output folder: every output complete and correct, each computed once."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from .fakes import Slow, fingerprint
from .helpers import (
    assert_complete,
    cli_env,
    outputs,
    records,
    run_jukemir,
    sigkill,
    start_jukemir,
    tally,
    wait_for,
    write_tones,
)

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 clips, their uninterrupted outputs and records, and each clip's fingerprint -> file name."""
    root = tmp_path_factory.mktemp("corpus")
    folder = write_tones(root / "in", 24, seed=3)
    r = run_jukemir("extract", "slow", folder, root / "ref", "--no-progress")
    assert r.returncode == 0, r.stderr
    rep = Slow()
    names = {fingerprint(rep.load(p)): p.name for p in sorted(folder.iterdir())}
    assert len(names) == 24
    return folder, outputs(root / "ref"), records(root / "ref"), names


def _computations(journal, names) -> Counter:
    lines = journal.read_text().split() if journal.exists() else []
    return Counter(names[fp] for fp in lines[::2])


def _run_together(arg_lists, env, kill_first_after=None):
    procs = [start_jukemir(*args, env=env) for args in arg_lists]
    killed = 0
    if kill_first_after is not None:
        out_dir = arg_lists[0][3]
        wait_for(lambda: len(list(out_dir.glob("*.npy"))) >= kill_first_after, procs[0])
        killed = int(sigkill(procs[0]))
    results = []
    for proc in procs[killed:]:
        stdout, stderr = proc.communicate(timeout=120)
        results.append((proc.returncode, stderr))
    return results, killed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_folder_twice(corpus, tmp_path, seed):
    folder, reference, reference_records, names = corpus
    out, journal = tmp_path / "out", tmp_path / "journal"
    rng = random.Random(seed)
    args = [
        ("extract", "slow", folder, out, "--no-progress", "--workers", rng.choice([1, 2])) for _ in range(2)
    ]
    results, _ = _run_together(args, cli_env(FAULT_DELAY=0.01, FAULT_JOURNAL=journal))
    for code, stderr in results:
        assert code == 0, stderr
    assert_complete(out, reference, reference_records)
    computed = _computations(journal, names)
    assert computed == Counter({name: 1 for name in names.values()}), f"computed more than once: {computed}"
    tally("concurrent", 2)
    tally("outputs_checked", len(reference))


def test_different_and_same_batches(corpus, tmp_path):
    """Batches 0 and 1 of 12, each started twice, all four at once."""
    folder, reference, reference_records, names = corpus
    out, journal = tmp_path / "out", tmp_path / "journal"
    args = [
        ("extract", "slow", folder, out, "--no-progress", "--batch_size", 12, "--batch_idx", i)
        for i in (0, 1, 1, 0)
    ]
    results, _ = _run_together(args, cli_env(FAULT_DELAY=0.01, FAULT_JOURNAL=journal))
    for code, stderr in results:
        assert code == 0, stderr
    assert_complete(out, reference, reference_records)
    assert _computations(journal, names) == Counter({name: 1 for name in names.values()})
    tally("concurrent", 4)
    tally("outputs_checked", len(reference))


def test_survivor_finishes_a_killed_workers_files(corpus, tmp_path):
    """Two workers on the same files; one is SIGKILLed: the other waits for its locks and takes over."""
    folder, reference, reference_records, names = corpus
    out, journal = tmp_path / "out", tmp_path / "journal"
    args = [("extract", "slow", folder, out, "--no-progress", "--workers", 1) for _ in range(2)]
    start = time.monotonic()
    results, killed = _run_together(
        args, cli_env(FAULT_DELAY=0.02, FAULT_JOURNAL=journal), kill_first_after=6
    )
    assert killed == 1, "the first worker finished before it could be killed"
    assert results[0][0] == 0, results[0][1]
    assert time.monotonic() - start < 60
    assert_complete(out, reference, reference_records)
    computed = _computations(journal, names)
    assert set(computed) == set(names.values()) and max(computed.values()) <= 2  # at most once more: the kill
    tally("kills")
    tally("concurrent", 2)
    tally("outputs_checked", len(reference))


def test_batch_dependent_workers(corpus, tmp_path):
    """A batch-dependent model: two workers, same batches; outputs equal the single worker's."""
    folder, _, _, _ = corpus
    ref = tmp_path / "ref"
    r = run_jukemir("extract", "batchstats", folder, ref, "--no-progress", "--batch_size", 5)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    args = [("extract", "batchstats", folder, out, "--no-progress", "--batch_size", 5) for _ in range(2)]
    results, _ = _run_together(args, cli_env(FAULT_DELAY=0.01))
    for code, stderr in results:
        assert code == 0, stderr
    assert_complete(out, outputs(ref), records(ref))
    tally("concurrent", 2)
    tally("outputs_checked", len(outputs(ref)))


@pytest.mark.parametrize(
    "second", [("--model", "double"), ("--batch_size", 6, "--batch_idx", 1, "--model", "double")]
)
def test_other_options_into_a_busy_folder_are_refused(corpus, tmp_path, second):
    """A run with other options (or another representation) cannot write into a folder another run is
    filling: it is refused with one line, whatever the batching, and the first run's outputs stay whole."""
    folder, reference, reference_records, _ = corpus
    out = tmp_path / "out"
    env = cli_env(FAULT_DELAY=0.05)
    first = start_jukemir("extract", "slow", folder, out, "--no-progress", env=env)
    wait_for(lambda: len(list(out.glob("*.npy"))) >= 2, first)
    r = run_jukemir("extract", "slow", folder, out, "--no-progress", *second, env=env)
    assert r.returncode == 2, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "error:" in x]
    assert "another process is writing slow features (model=plain) into this folder" in line
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert_complete(out, reference, reference_records)
    # once nobody holds it, the folder may be used for the other options: its outputs are then recomputed
    r = run_jukemir("extract", "slow", folder, out, "--no-progress", "--model", "double")
    assert r.returncode == 0 and "24 stale recomputed" in r.stderr, r.stderr
    tally("concurrent", 2)
    tally("bad_input")


def test_one_stem_two_files_is_decided_the_same_in_every_batch(tmp_path):
    """a.flac and a.wav both make a.npy: the first by name (a.flac) owns it, whichever batch runs first."""
    import numpy as np
    import soundfile as sf

    folder = write_tones(tmp_path / "in", 3, seed=9)
    tone = 0.3 * np.sin(np.arange(4000) / 7.0)
    sf.write(str(folder / "a.flac"), tone, 8000)
    sf.write(str(folder / "a.wav"), 0.5 * tone, 8000)
    results = {}
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 0, 3, 2, 4]):
        out = tmp_path / f"out{''.join(map(str, order))}"
        for idx in order:  # batches of one file: a.flac is batch 0, a.wav batch 1
            r = run_jukemir(
                "extract", "slow", folder, out, "--no-progress", "--batch_size", 1, "--batch_idx", idx
            )
            if idx == 1:
                assert r.returncode == 1 and "a.wav: same output name as a.flac (a.npy)" in r.stderr, r.stderr
            else:
                assert r.returncode == 0, r.stderr
        results[tuple(order)] = (out / "a.npy").read_bytes()
        assert records(out)["a"]["source"]["name"] == "a.flac"
    assert len(set(results.values())) == 1
    tally("bad_input", 3)


def test_input_folder_as_output_folder_is_refused(tmp_path):
    folder = write_tones(tmp_path / "in", 2, seed=2)
    for _ in range(2):
        r = run_jukemir("extract", "slow", folder, folder, "--no-progress")
        assert r.returncode == 2 and "the output folder is the input folder" in r.stderr, r.stderr
    assert not list(folder.glob("*.npy"))
    tally("bad_input")
