"""Training a grid of one dataset x representation: what is left to train, claims, resume, executors.

:func:`train_grid` (what ``jukemir probe`` runs) trains the configs that have
no finished run on the data there now, with the stacked trainer
(:func:`~jukemir.probe.stack.train_probes`) or the original's loop
(:func:`~jukemir.probe.serial.train_probe`), and saves each run as soon as it
stops, so an interrupted grid resumes where it stopped. Workers sharing a grid
claim one stack at a time (a lock file per stack), so that they share it
instead of all training everything. A Ray executor gets one task per stack.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..cache import Layout, folder_name
from ..errors import UserError
from ..io import FileLock, read_json
from ..workers import signals_held, take_into
from .config import ProbeConfig
from .data import load_probe_data
from .run import run_is_done
from .serial import train_probe
from .stack import plan_stacks, stack_key, train_probes


def train_grid(
    dataset: str,
    representation: str,
    cfgs: Sequence,
    *,
    serial: bool = False,
    precision: str = "fp32",
    device=None,
    executor=None,
    nonfinite: str = "replace",
    overwrite: bool = False,
    progress: bool = True,
    layout: Layout | None = None,
) -> list[dict]:
    """Train and save every config of ``dataset`` x ``representation`` that has no finished run.

    Each run is saved to its run folder (``probes/<dataset>/<representation>/<uid>/``
    of ``layout``, default ``Layout()``) as soon as it stops, so an interrupted
    grid resumes where it stopped. A finished run trained on other data
    (features, labels or splits changed since: see
    :attr:`~jukemir.probe.data.ProbeData.fingerprint`) is stale and trained again.

    Args:
        cfgs: configs whose dataset and representation are these.
        serial: train one config after another with
            :func:`~jukemir.probe.serial.train_probe` (the original's loop)
            instead of :func:`~jukemir.probe.stack.train_probes`.
        precision: the stacked trainer's arithmetic (see :func:`~jukemir.probe.stack.train_probes`).
        executor: where stacks of configs run (``None`` or a local executor:
            here, features loaded once; otherwise ``executor.map`` over the
            stacks of :func:`~jukemir.probe.stack.plan_stacks`, e.g. a Ray executor).
        overwrite: retrain configs that already have a finished run.
        layout: the cache the features are read from and the runs written to.

    Returns one ``{"uid", "status": "trained"|"skipped", "dir", "metrics"}``
    per config, in the order of ``cfgs`` (metrics: validation metrics).
    """
    cfgs = [ProbeConfig(c) for c in cfgs]
    representation = folder_name(representation)
    for cfg in cfgs:
        if (cfg["dataset"], cfg["representation"]) != (dataset, representation):
            raise UserError(
                f"config {cfg.uid()} is for {cfg['dataset']}/{cfg['representation']}, "
                f"not {dataset}/{representation}"
            )
    layout = layout or Layout()
    if not cfgs:
        return []
    seed = cfgs[0]["seed"]
    data = load_probe_data(
        dataset, representation, seed=seed if seed is not None else 0, nonfinite=nonfinite, layout=layout
    )
    todo = [c for c in cfgs if overwrite or not run_is_done(c, layout, data.fingerprint)]
    stale = sum(run_is_done(c, layout) for c in todo) if not overwrite else 0
    if stale:
        print(
            f"jukemir probe: {dataset}/{representation}: "
            f"{stale} finished run(s) were trained on other features "
            "or metadata than those there now; retraining them",
            file=sys.stderr,
        )
    if executor is not None and getattr(executor, "name", "local") != "local":
        shards = [[dict(todo[i]) for i in s] for s in plan_stacks(todo)]
        task = functools.partial(
            _grid_shard,
            dataset,
            representation,
            serial=serial,
            precision=precision,
            device=device,
            nonfinite=nonfinite,
            overwrite=overwrite,
            layout=layout,
        )
        executor.map(task, shards)
        return [_run_summary(c, layout, "trained" if c in todo else "skipped") for c in cfgs]

    trained: set = set()
    if todo:

        def save(probe):
            probe.save(data, layout)
            trained.add(probe.cfg.uid())

        bar = None
        if progress:
            from tqdm import tqdm

            what = f"probe {dataset}/{representation}" + (" (serial)" if serial else "")
            bar = tqdm(total=len(todo), desc=what, unit="cfg", file=sys.stderr)
        stacks = [[c] for c in todo] if serial else [[todo[i] for i in s] for s in plan_stacks(todo)]
        started = time.time()
        claims = _claimed(stacks, layout.probes(dataset, representation), serial)
        try:
            for stack in claims:
                # another worker may have finished some of them while this one waited for the claim
                left = [
                    c for c in stack if not _finished_since(c, layout, data.fingerprint, overwrite, started)
                ]
                if bar is not None:
                    bar.update(len(stack) - len(left))
                if serial and left:
                    save(train_probe(left[0], data, device=device))
                    if bar is not None:
                        bar.update()
                elif left:
                    train_probes(left, data, device=device, progress=bar, on_finish=save, precision=precision)
        finally:
            claims.close()  # releases a claim held when training stopped, now rather than when collected
            if bar is not None:
                bar.close()
    return [_run_summary(c, layout, "trained" if c.uid() in trained else "skipped") for c in cfgs]


def _claimed(stacks: list[list], folder: Path, serial: bool):
    """Yield each stack of configs (with ``serial``, each config alone) while holding its claim.

    A stack another worker holds is deferred; once the free ones are done, this
    worker waits for each deferred claim in turn (the other worker may have died,
    or finished only some of the configs), so concurrent workers on one grid
    share it instead of all training everything.
    """

    def lock_of(stack):
        key = stack[0].uid() if serial else json.dumps(stack_key(stack[0]))
        return FileLock(folder / ".claims" / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".lock"))

    held: list[FileLock] = []  # claims taken and not yet released: whatever stops this, they are released

    def take(stack, wait: bool) -> bool:
        lock = lock_of(stack)
        return take_into(held, lock, lock.acquire, wait)

    def release_last() -> None:
        with signals_held():
            held.pop().release()

    deferred = []
    try:
        for stack in stacks:
            if not take(stack, wait=False):
                deferred.append(stack)
                continue
            yield stack
            release_last()
        if deferred:
            print(
                f"jukemir probe: another worker is training {sum(map(len, deferred))} of these configs; "
                "waiting to take over whatever it does not finish",
                file=sys.stderr,
            )
        for stack in deferred:
            take(stack, wait=True)
            yield stack
            release_last()
    finally:
        while held:
            release_last()


def _finished_since(cfg, layout: Layout, features: str, overwrite: bool, started: float) -> bool:
    """Whether ``cfg`` needs no training now: done on this data (with ``overwrite``: done since
    ``started``)."""
    if not run_is_done(cfg, layout, features):
        return False
    if not overwrite:
        return True
    return (layout.run(cfg) / "metrics.json").stat().st_mtime >= started


def _grid_shard(dataset, representation, cfgs, **kwargs):
    return train_grid(dataset, representation, cfgs, progress=False, **kwargs)


def _run_summary(cfg, layout: Layout, status: str) -> dict:
    folder = layout.run(cfg)
    metrics_file = folder / "metrics.json"
    return {
        "uid": cfg.uid(),
        "status": status,
        "dir": str(folder),
        "metrics": read_json(metrics_file) if metrics_file.is_file() else None,
    }
