"""Probe-grid speed: the paper's 216-config grid, vectorised vs serial, on synthetic features.

Sizes (issue 7):
  gtzan: 443 / 197 / 290 examples x 4,800 dims, 10 classes (accuracy)
  mtt:   18,706 / 1,825 / 5,329 examples x 4,800 dims, 50 tags (macro ROC-AUC)

Both trainers run the same number of updates per config (same semantics), so
the comparison is made at a fixed number of updates per config (``--steps``,
validation every 8 updates as in the paper): the vectorised trainer runs the
whole grid; the serial trainer (the original's loop, one config after
another) is timed on ``--serial-sample`` configs of each of the grid's four
stacks (linear/MLP x batch 64/256) and its grid time is estimated as the mean
per config times the configs of that stack. ``--full`` also trains the real
gtzan grid with early stopping and estimates the serial time from each
config's actual number of updates.

    python benchmarks/probe_grid.py --quick     # gtzan only, 64 updates per config
    python benchmarks/probe_grid.py             # gtzan and mtt, 256 updates per config
    python benchmarks/probe_grid.py --full      # + the real gtzan grid with early stopping
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from jukemir.datasets import get_dataset
from jukemir.probe.config import ProbeConfig
from jukemir.probe.grid import paper_grid_cfgs
from jukemir.probe.train import ProbeData, group_key, plan_groups, train_probe, train_probes

SIZES = {
    "gtzan": ("gtzan_ff", (443, 197, 290)),
    "mtt": ("magnatagatune", (18706, 1825, 5329)),
}
DIM = 4800


def synthetic_data(size: str, dim: int = DIM, seed: int = 0) -> ProbeData:
    """In-memory features with class structure and per-dimension scales/offsets (so standardising matters)."""
    dataset, counts = SIZES[size]
    spec = get_dataset(dataset)
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 1, dim)).astype(np.float32)
    offset = rng.normal(0, 3, dim).astype(np.float32)
    mixing = rng.normal(0, 0.15, (spec.num_outputs, dim)).astype(np.float32)
    uids, X, targets = {}, {}, {}
    for split, n in zip(("train", "valid", "test"), counts):
        if spec.task == "multiclass":
            y = rng.integers(0, spec.num_outputs, n)
            latent = np.eye(spec.num_outputs, dtype=np.float32)[y]
            targets[split] = y.astype(np.int64)
        else:
            rate = np.linspace(0.03, 0.2, spec.num_outputs)
            latent = (rng.random((n, spec.num_outputs)) < rate).astype(np.float32)
            targets[split] = latent.astype(np.uint8)
        noise = rng.standard_normal((n, dim), dtype=np.float32)
        X[split] = ((latent @ mixing + noise) * scale + offset).astype(np.float32)
        uids[split] = [f"{split}{i:05d}" for i in range(n)]
    return ProbeData(dataset, "synthetic", spec, 0, uids, X, targets, Path("."))


def capped(cfgs, steps: int, n_train: int) -> list[ProbeConfig]:
    """The configs stopped after exactly ``steps`` updates (early-stopping evaluations still run)."""
    return [
        ProbeConfig({**cfg, "early_stopping_boredom": 10**9,
                     "max_num_epochs": (steps - 0.5) * cfg["batch_size"] / n_train})  # fmt: skip
        for cfg in cfgs
    ]


def stack_name(cfg) -> str:
    hidden, bs, _ = group_key(cfg)
    return f"{'linear' if not hidden else 'mlp' + 'x'.join(map(str, hidden))} bs{bs}"


def bench_size(size: str, steps: int, serial_sample: int, device: str, full: bool) -> None:
    t0 = time.time()
    data = synthetic_data(size)
    n_train = len(data.uids["train"])
    print(f"\n== {size}-sized: {n_train}/{len(data.uids['valid'])}/{len(data.uids['test'])} x {data.num_features}, "
          f"{data.spec.num_outputs} outputs ({data.spec.task}); features made in {time.time() - t0:.1f} s")  # fmt: skip
    grid = paper_grid_cfgs(data.dataset, data.representation)
    cfgs = capped(grid, steps, n_train)

    t0 = time.time()
    probes = train_probes(cfgs, data, device=device, progress=False)
    vec_total = time.time() - t0
    assert all(p.info["steps"] == steps for p in probes)

    serial_total, per_step = 0.0, {}
    print(f"{'stack':>14} {'configs':>7} {'vectorised':>11} {'serial s/config':>16} {'serial (est.)':>14} {'ratio':>6}")
    for group in plan_groups(cfgs):
        vec_group = max(probes[i].info["seconds"] for i in group)
        sample = group[:: max(1, len(group) // serial_sample)][:serial_sample]
        t0 = time.time()
        for i in sample:
            train_probe(cfgs[i], data, device=device)
        per_config = (time.time() - t0) / len(sample)
        serial_total += per_config * len(group)
        per_step[group_key(cfgs[group[0]])] = per_config / steps
        print(f"{stack_name(cfgs[group[0]]):>14} {len(group):>7} {vec_group:>10.1f}s {per_config:>16.2f} "
              f"{per_config * len(group):>13.1f}s {per_config * len(group) / vec_group:>5.1f}x")  # fmt: skip
    print(f"{len(cfgs)} configs x {steps} updates each (validation every 8):")
    print(f"  vectorised (measured, whole grid): {vec_total:8.1f} s")
    print(f"  serial (estimated from {serial_sample} sampled configs per stack): {serial_total:8.1f} s")
    print(f"  speed-up: {serial_total / vec_total:.1f}x   (load avg now {os.getloadavg()[0]:.1f})")

    if full:
        t0 = time.time()
        probes = train_probes(grid, data, device=device, progress=True)
        vec_full = time.time() - t0
        updates = [p.info["steps"] for p in probes]
        serial_full = sum(per_step[group_key(c)] * p.info["steps"] for c, p in zip(grid, probes))
        print(f"full paper grid with early stopping ({sum(updates)} updates in all, "
              f"{min(updates)}..{max(updates)} per config):")  # fmt: skip
        print(f"  vectorised (measured): {vec_full:8.1f} s")
        print(f"  serial (estimated: each config's updates x its stack's measured serial time per update): "
              f"{serial_full:8.1f} s")  # fmt: skip
        print(f"  speed-up: {serial_full / vec_full:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="gtzan only, 64 updates, 1 serial config per stack")
    parser.add_argument("--sizes", default="gtzan,mtt", help="comma-separated: gtzan, mtt")
    parser.add_argument("--steps", type=int, default=256, help="updates per config")
    parser.add_argument("--serial-sample", type=int, default=2, help="serial configs timed per stack")
    parser.add_argument("--full", action="store_true", help="also train the real gtzan grid with early stopping")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.steps, args.serial_sample = "gtzan", 64, 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
    for size in args.sizes.split(","):
        bench_size(size.strip(), args.steps, args.serial_sample, args.device, args.full and size.strip() == "gtzan")


if __name__ == "__main__":
    main()
