"""Shared pieces of the fault suite: its tally, audio folders, CLI processes, output checks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from jukemir.io import TMP_MARK
from jukemir.representations.folder import STATE_DIR

REPO = Path(__file__).resolve().parents[2]

# What the suite survived, printed by conftest.py at the end of the session.
TALLY: Counter = Counter()


def tally(kind: str, n: int = 1) -> None:
    """Count ``n`` survived faults of ``kind`` (kills, fuzz cases, concurrent runs, ...)."""
    TALLY[kind] += n


def cli_env(**extra) -> dict:
    """The environment of a CLI subprocess: this checkout and the suite's fakes importable, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def jukemir_args(*args, fakes: bool = True) -> list[str]:
    """argv of ``jukemir ARGS`` (with the fakes registered unless ``fakes=False``: the plain command)."""
    module = "faults.worker" if fakes else "jukemir"
    return [sys.executable, "-m", module, *map(str, args)]


def run_jukemir(*args, fakes: bool = True, timeout: float = 120, env: dict | None = None, **popen):
    """Run ``jukemir ARGS`` to completion; return the CompletedProcess (text output captured)."""
    return subprocess.run(
        jukemir_args(*args, fakes=fakes),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or cli_env(),
        **popen,
    )


def start_jukemir(*args, fakes: bool = True, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start ``jukemir ARGS`` in the background (stdout/stderr to pipes)."""
    return subprocess.Popen(
        jukemir_args(*args, fakes=fakes),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env or cli_env(),
        **popen,
    )


def sigkill(proc: subprocess.Popen) -> bool:
    """SIGKILL ``proc`` and reap it; True if it was still running (a real kill), False if it had exited."""
    if proc.poll() is not None:
        proc.communicate()
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


def wait_for(
    condition, proc: subprocess.Popen | None = None, timeout: float = 60.0, poll: float = 0.002
) -> bool:
    """Poll ``condition()`` until it is true (True) or ``proc`` exits (False).

    TimeoutError after ``timeout``.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError(f"condition not met in {timeout} s")


def write_tones(folder: Path, n: int, seed: int, sr: int = 8000, seconds=(0.3, 0.8)) -> Path:
    """``n`` deterministic mono 16-bit WAVs ``c00.wav``... of random pitch, level and length (seeded)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int(rng.uniform(*seconds) * sr)) / sr
        x = rng.uniform(0.05, 0.95) * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
        x += 0.01 * rng.standard_normal(len(t))
        sf.write(str(folder / f"c{i:02d}.wav"), np.clip(x, -1, 1).astype(np.float32), sr, subtype="PCM_16")
    return folder


def outputs(out_dir: Path) -> dict[str, bytes]:
    """``{name: bytes}`` of the ``.npy`` outputs of a folder."""
    return {p.name: p.read_bytes() for p in sorted(Path(out_dir).glob("*.npy"))}


def records(out_dir: Path) -> dict[str, dict]:
    """``{stem: provenance record}`` of a folder."""
    folder = Path(out_dir) / STATE_DIR / "provenance"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def temporaries(out_dir: Path) -> list[Path]:
    """Temporary files (of killed or failed writers) anywhere under ``out_dir``."""
    return sorted(p for p in Path(out_dir).rglob(TMP_MARK + "*"))


def assert_no_corrupt(out_dir: Path, reference: dict[str, bytes]) -> int:
    """Every visible ``.npy`` is byte-identical to the uninterrupted run's; return how many there are."""
    found = outputs(out_dir)
    unknown = sorted(set(found) - set(reference))
    assert not unknown, f"{out_dir}: outputs that the uninterrupted run did not write: {unknown}"
    bad = sorted(name for name, data in found.items() if data != reference[name])
    assert not bad, f"{out_dir}: outputs that differ from the uninterrupted run: {bad}"
    return len(found)


def assert_complete(
    out_dir: Path, reference: dict[str, bytes], reference_records: dict | None = None
) -> None:
    """Every output present, byte-identical, with its provenance; no temporaries or locks left behind."""
    assert_no_corrupt(out_dir, reference)
    missing = sorted(set(reference) - set(outputs(out_dir)))
    assert not missing, f"{out_dir}: outputs lost: {missing}"
    if reference_records is not None:
        assert records(out_dir) == reference_records, (
            f"{out_dir}: provenance records differ from the uninterrupted run's"
        )
    assert not temporaries(out_dir), f"{out_dir}: temporary files left behind: {temporaries(out_dir)}"
    locks = Path(out_dir) / STATE_DIR / "locks"
    assert not (locks.exists() and any(locks.iterdir())), (
        f"{out_dir}: lock files left behind: {list(locks.iterdir())}"
    )


CRASH_OPS = ("open", "fsync", "replace", "link", "unlink", "rename")


def run_forked(fn, crash_at: int | None = None) -> tuple[bool, int]:
    """Run ``fn()`` in a forked child; with ``crash_at=k`` the child SIGKILLs itself just before its
    k-th file-system step (a call of ``os.open``/``fsync``/``replace``/``link``/``unlink``/``rename``).

    Returns ``(killed, steps)``: whether the child died of SIGKILL, and how many steps it took
    (of a run that was not killed). Enumerating ``k = 1..steps`` visits every crash point of a run.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count (and maybe crash at) file-system steps, never return to pytest
        code = 0
        try:
            os.close(read_end)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            steps = [0]

            def counted(real):
                def step(*args, **kwargs):
                    steps[0] += 1
                    if steps[0] == crash_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(*args, **kwargs)

                return step

            for name in CRASH_OPS:
                setattr(os, name, counted(getattr(os, name)))
            fn()
            os.write(write_end, str(steps[0]).encode())
        except BaseException:  # noqa: BLE001 - report through the exit status
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read()
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if not killed and (not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0):
        raise RuntimeError(f"forked run failed (status {status})")
    return killed, int(written or 0)


def import_args(name: str, audio, labels, jobs: int = 1) -> tuple:
    """``jukemir import`` of multiclass dataset ``name`` from ``audio`` and a labels CSV, no progress bar."""
    return (
        "import",
        name,
        "--audio",
        audio,
        "--labels",
        labels,
        "--task",
        "multiclass",
        "--jobs",
        jobs,
        "--no-progress",
    )


def probe_args(dataset: str, representation: str, configs, *extra) -> tuple:
    """``jukemir probe`` of ``configs`` (config files) on a dataset's representation, no progress bar."""
    return ("probe", dataset, representation, "--config", *map(str, configs), "--no-progress", *extra)


def make_probe_dataset(
    name: str = "faulty", representation: str = "slow", n: int = 60, seed: int = 0
) -> Path:
    """A small multiclass dataset in the cache: 3 classes, 8-d features, splits 3:1:1.

    Returns the feature folder.
    """
    from jukemir.cache import Layout
    from jukemir.io import save_npy, write_json

    rng = np.random.default_rng(seed)
    spec = {
        "name": name,
        "task": "multiclass",
        "labels": ["a", "b", "c"],
        "num_outputs": 3,
        "primary": "accuracy",
    }
    write_json(Layout().processed(name) / "dataset.json", spec)
    meta, folder = {}, Layout().representations(name, representation)
    for i in range(n):
        y = i % 3
        meta[f"u{i:03d}"] = {"split": ["train", "train", "train", "valid", "test"][i % 5], "y": "abc"[y]}
        save_npy(
            folder / f"u{i:03d}.npy", (np.eye(3, 8)[y] + 0.8 * rng.standard_normal(8)).astype(np.float32)
        )
    write_json(Layout().processed(name) / "meta.json", meta)
    return folder


def children(pid: int) -> set[int]:
    """The pids of the live descendants of ``pid`` (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    if int(child) not in found:
                        found.add(int(child))
                        todo.append(int(child))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "X")
    return state not in ("Z", "X")


def assert_no_survivors(pids, timeout: float = 10.0) -> None:
    """Every process of ``pids`` is gone within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.05)
    left = sorted(p for p in pids if alive(p))
    for pid in left:  # do not leave them to the next test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"worker processes outlived their parent: {left}"
