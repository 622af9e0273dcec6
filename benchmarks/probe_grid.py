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

The vectorised trainer is timed in fp32 and in bf16 (``--precision``), and a
floor is printed: the time of the Adam updates alone, one config at a time,
which bounds the speed-up any trainer of these semantics can reach here.

    python benchmarks/probe_grid.py --quick     # gtzan only, 64 updates per config
    python benchmarks/probe_grid.py             # gtzan and mtt, 256 updates per config
    python benchmarks/probe_grid.py --full      # + the real gtzan grid with early stopping

``--paper`` trains the whole paper grid instead: every pair of the 4 datasets
x 6 representations, each with its 216 configs, at the datasets' real split
sizes (REFERENCE 6: gtzan_ff 443/197/290, giantsteps_clips 3,687/942/2,406,
magnatagatune 18,706/1,825/5,329, emomusic 504/115/125) and the
representations' real dimensions (chroma 72, mfcc 120, choi 160, musicnn 4,194,
clmr 512, jukebox 4,800), on synthetic features of those shapes with the
task's targets (classes, tags, two regression values), with the original's
early stopping (validation every 8 updates, stop after 256 without
improvement, best weights restored). It prints one row per pair (updates per
config, seconds) and the total. How many updates early stopping takes depends
on the features; synthetic ones are a stand-in, and the table shows the count.

    # the whole grid (GPU)
    python benchmarks/probe_grid.py --paper --device cuda --precision bf16
    # CPU check
    python benchmarks/probe_grid.py --paper --scale 0.05 --max-steps 64 --pairs 'gtzan_ff/*'
    # as many pairs as fit, cheapest first
    python benchmarks/probe_grid.py --paper --device cuda --budget 150
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from jukemir.datasets import get_dataset
from jukemir.probe.adam import make_adam
from jukemir.probe.config import ProbeConfig
from jukemir.probe.data import ProbeData
from jukemir.probe.grid import paper_grid_cfgs
from jukemir.probe.serial import train_probe
from jukemir.probe.stack import plan_stacks, stack_key, train_probes
from jukemir.representations import DIMS

# (train, valid, test) examples of each dataset's probe splits (REFERENCE 6)
SPLIT_SIZES = {
    "gtzan_ff": (443, 197, 290),
    "magnatagatune": (18706, 1825, 5329),
    "giantsteps_clips": (3687, 942, 2406),
    "emomusic": (504, 115, 125),
}
SIZES = {
    "gtzan": ("gtzan_ff", SPLIT_SIZES["gtzan_ff"]),
    "mtt": ("magnatagatune", SPLIT_SIZES["magnatagatune"]),
}
DIM = 4800


def synthetic_data(
    size: str, dim: int = DIM, seed: int = 0, counts: tuple | None = None, representation: str = "synthetic"
) -> ProbeData:
    """In-memory features with class structure and per-dimension scales/offsets (so standardising matters).

    ``size``: a key of :data:`SIZES` or a dataset name (then ``counts`` defaults to its real split sizes).
    Targets follow the dataset's task: classes, tags (multi-hot) or regression values.
    """
    dataset, real_counts = SIZES[size] if size in SIZES else (size, SPLIT_SIZES[size])
    counts = counts or real_counts
    spec = get_dataset(dataset)
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 1, dim)).astype(np.float32)
    offset = rng.normal(0, 3, dim).astype(np.float32)
    mixing = rng.normal(0, 0.15, (spec.num_outputs, dim)).astype(np.float32)
    uids, X, targets = {}, {}, {}
    for split, n in zip(("train", "valid", "test"), counts):
        if spec.task == "multiclass":
            y = rng.integers(0, spec.num_outputs, n)
            if spec.key_clips:  # clips <song>-<clip> of 4-clip songs share the song's key
                y = y[np.arange(n) // 4]
            latent = np.eye(spec.num_outputs, dtype=np.float32)[y]
            targets[split] = y.astype(np.int64)
        elif spec.task == "regression":
            latent = rng.standard_normal((n, spec.num_outputs), dtype=np.float32)
            targets[split] = latent.copy()
        else:
            rate = np.linspace(0.03, 0.2, spec.num_outputs)
            latent = (rng.random((n, spec.num_outputs)) < rate).astype(np.float32)
            k = np.arange(spec.num_outputs)  # every tag positive and negative somewhere (ROC-AUC is defined)
            latent[k % n, k], latent[(k + 1) % n, k] = 1, 0
            targets[split] = latent.astype(np.uint8)
        noise = rng.standard_normal((n, dim), dtype=np.float32)
        X[split] = ((latent @ mixing + noise) * scale + offset).astype(np.float32)
        uids[split] = [
            f"{split}{i // 4:05d}-{i % 4}" if spec.key_clips else f"{split}{i:05d}" for i in range(n)
        ]
    return ProbeData(dataset, representation, spec, 0, uids, X, targets, Path("."))


def capped(cfgs, steps: int, n_train: int) -> list[ProbeConfig]:
    """The configs stopped after exactly ``steps`` updates (early-stopping evaluations still run)."""
    return [
        ProbeConfig(
            {
                **cfg,
                "early_stopping_boredom": 10**9,
                "max_num_epochs": (steps - 0.5) * cfg["batch_size"] / n_train,
            }
        )
        for cfg in cfgs
    ]


def stack_name(cfg) -> str:
    hidden, bs, _ = stack_key(cfg)
    return f"{'linear' if not hidden else 'mlp' + 'x'.join(map(str, hidden))} bs{bs}"


def adam_seconds(cfg, data: ProbeData, device: str, repeats: int = 20) -> float:
    """Seconds of one update of the vectorised trainer's Adam over one config's parameters (cache-hot)."""
    sizes = [data.num_features, *cfg["hidden_layer_sizes"], data.spec.num_outputs]
    params = [torch.zeros(a * b + b, device=device) for a, b in zip(sizes, sizes[1:])]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make_adam([params], [cfg])
    opt.step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        opt.step()
    return (time.perf_counter() - t0) / repeats


def products_seconds(cfg, data: ProbeData, device: str, dtype=torch.bfloat16, repeats: int = 20) -> float:
    """Seconds of one config's first-layer products of an update in ``dtype``.

    The products are the forward one and the weight gradient.
    """
    B, D = cfg["batch_size"], data.num_features
    H = (cfg["hidden_layer_sizes"] or [data.spec.num_outputs])[0]
    x, W = torch.randn(B, D, device=device, dtype=dtype), torch.randn(D, H, device=device, dtype=dtype)
    dZ, gW = torch.randn(B, H, device=device, dtype=dtype), torch.empty(D, H, device=device, dtype=dtype)

    def run():
        torch.mm(x, W)
        torch.mm(x.t(), dZ, out=gW)

    run()
    t0 = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - t0) / repeats


def bench_size(
    size: str, steps: int, serial_sample: int, device: str, full: bool, precisions: list[str]
) -> None:
    t0 = time.time()
    data = synthetic_data(size)
    n_train = len(data.uids["train"])
    print(
        f"\n== {size}-sized: {n_train}/{len(data.uids['valid'])}/{len(data.uids['test'])} "
        f"x {data.num_features}, "
        f"{data.spec.num_outputs} outputs ({data.spec.task}); features made in {time.time() - t0:.1f} s"
    )
    grid = paper_grid_cfgs(data.dataset, data.representation)
    cfgs = capped(grid, steps, n_train)

    vec_total, vec_stack = {}, {}
    for precision in precisions:
        stacks = plan_stacks(cfgs)
        for stack in stacks:  # timed per stack: the stacks run one after another
            t0 = time.time()
            probes = train_probes(
                [cfgs[i] for i in stack], data, device=device, progress=False, precision=precision
            )
            vec_stack[precision, stack[0]] = time.time() - t0
            assert all(p.info["steps"] == steps for p in probes)
        vec_total[precision] = sum(vec_stack[precision, g[0]] for g in stacks)

    serial_total, per_step = 0.0, {}
    train_probe(
        capped(cfgs[:1], 8, n_train)[0], data, device=device
    )  # warm up (first-call costs are not per config)
    heads = "".join(f" {'vec ' + p:>10} {'ratio':>6}" for p in precisions)
    print(f"{'stack':>14} {'configs':>7} {'serial s/config':>16} {'serial (est.)':>14}{heads}")
    for stack in plan_stacks(cfgs):
        sample = stack[:: max(1, len(stack) // serial_sample)][:serial_sample]
        t0 = time.time()
        for i in sample:
            train_probe(cfgs[i], data, device=device)
        per_config = (time.time() - t0) / len(sample)
        serial_total += per_config * len(stack)
        per_step[stack_key(cfgs[stack[0]])] = per_config / steps
        cols = "".join(
            f" {vec_stack[p, stack[0]]:>9.1f}s {per_config * len(stack) / vec_stack[p, stack[0]]:>5.1f}x"
            for p in precisions
        )
        print(
            f"{stack_name(cfgs[stack[0]]):>14} {len(stack):>7} {per_config:>16.2f} "
            f"{per_config * len(stack):>13.1f}s{cols}"
        )
    print(f"{len(cfgs)} configs x {steps} updates each (validation every 8):")
    print(f"  serial (estimated from {serial_sample} sampled configs per stack): {serial_total:8.1f} s")
    for precision in precisions:
        print(
            f"  vectorised {precision} (measured, whole grid): {vec_total[precision]:8.1f} s   "
            f"speed-up {serial_total / vec_total[precision]:.1f}x"
        )
    # A floor no trainer of these semantics can go below on this machine: every config must apply one
    # Adam update to all of its parameters per step (a dense update: the gradient of a minibatch
    # touches every weight); timed here for one config alone, its most cache-friendly case.
    stacks = plan_stacks(cfgs)
    adam = sum(adam_seconds(cfgs[g[0]], data, device) * steps * len(g) for g in stacks)
    products = sum(products_seconds(cfgs[g[0]], data, device) * steps * len(g) for g in stacks)
    print(
        f"  floor: each update's two first-layer products alone, at bf16 speed: {products:.1f} s "
        f"(<= {serial_total / products:.1f}x); "
        f"the Adam updates alone (fused, one config at a time): {adam:.1f} s "
        f"(<= {serial_total / adam:.1f}x); both: {adam + products:.1f} s "
        f"(<= {serial_total / (adam + products):.1f}x), "
        f"before any evaluation, casts, dropout or bookkeeping"
    )
    print(f"  (load avg now {os.getloadavg()[0]:.1f})")

    if full:
        t0 = time.time()
        probes = train_probes(grid, data, device=device, progress=True, precision=precisions[-1])
        vec_full = time.time() - t0
        updates = [p.info["steps"] for p in probes]
        serial_full = sum(per_step[stack_key(c)] * p.info["steps"] for c, p in zip(grid, probes))
        print(
            f"full paper grid with early stopping ({sum(updates)} updates in all, "
            f"{min(updates)}..{max(updates)} per config):"
        )
        print(f"  vectorised {precisions[-1]} (measured): {vec_full:8.1f} s")
        print(
            f"  serial (estimated: each config's updates x its stack's measured serial time per update): "
            f"{serial_full:8.1f} s"
        )
        print(f"  speed-up: {serial_full / vec_full:.1f}x")


def paper_pairs(patterns: str | None) -> list[tuple[str, str]]:
    """The grid's (dataset, representation) pairs matching the globs.

    ``patterns`` is comma-separated ``dataset/representation`` globs.
    """
    pairs = [(d, r) for d in SPLIT_SIZES for r in DIMS]
    if not patterns:
        return pairs
    globs = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [pair for pair in pairs if any(fnmatch.fnmatch("/".join(pair), g) for g in globs)]
    if not chosen:
        raise SystemExit(f"--pairs {patterns!r} matches none of {['/'.join(p) for p in pairs]}")
    return chosen


def bench_paper(args) -> None:
    """Train every chosen pair's 216 configs with early stopping; per-pair table and total."""
    pairs = paper_pairs(args.pairs)
    if args.budget is not None:  # as many pairs as fit: cheapest first (validation size x dimension)
        pairs.sort(key=lambda p: (SPLIT_SIZES[p[0]][1] + 64) * DIMS[p[1]])
    precision = args.precision.split(",")[-1]
    print(
        f"paper grid: {len(pairs)} pairs x 216 configs, precision {precision}, device {args.device}, "
        f"scale {args.scale}, max steps {args.max_steps or 'none (early stopping only)'}"
        + (f", budget {args.budget:.0f} s" if args.budget is not None else "")
    )
    head = f"{'dataset':>17} {'representation':>14} {'dim':>5} {'train/valid/test':>18} {'configs':>7} "
    print(head + f"{'updates min/median/max':>23} {'seconds':>8} {'so far':>8}")
    start, rows, skipped = time.time(), [], []
    for dataset, rep in pairs:
        if args.budget is not None and time.time() - start > args.budget:
            skipped.append(f"{dataset}/{rep}")
            continue
        counts = tuple(max(16, round(n * args.scale)) for n in SPLIT_SIZES[dataset])
        data = synthetic_data(dataset, DIMS[rep], counts=counts, representation=rep)
        cfgs = paper_grid_cfgs(dataset, rep)
        if args.max_steps:  # a cap on top of early stopping (the original's max_num_epochs, in updates)
            cfgs = [
                ProbeConfig({**c, "max_num_epochs": (args.max_steps - 0.5) * c["batch_size"] / counts[0]})
                for c in cfgs
            ]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.time()
        probes = train_probes(cfgs, data, device=args.device, progress=False, precision=precision)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.time() - t0
        steps = np.array([p.info["steps"] for p in probes])
        rows.append((dataset, rep, seconds, int(steps.sum())))
        print(
            f"{dataset:>17} {rep:>14} {DIMS[rep]:>5} {'/'.join(map(str, counts)):>18} {len(cfgs):>7} "
            f"{steps.min():>7d} /{int(np.median(steps)):>6d} /{steps.max():>6d} {seconds:>8.1f} "
            f"{sum(r[2] for r in rows):>8.1f}",
            flush=True,
        )
    total = sum(r[2] for r in rows)
    print(
        f"total: {len(rows)} of {len(rows) + len(skipped)} pairs, {len(rows) * 216} configs, "
        f"{sum(r[3] for r in rows):,} updates, {total:.1f} s ({total / 60:.1f} min)"
    )
    if skipped:
        print(
            f"not run (past the {args.budget:.0f} s budget, so this is NOT the whole grid's time): "
            f"{', '.join(skipped)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="gtzan only, 64 updates, 1 serial config per stack"
    )
    parser.add_argument("--sizes", default="gtzan,mtt", help="comma-separated: gtzan, mtt")
    parser.add_argument("--steps", type=int, default=256, help="updates per config")
    parser.add_argument("--serial-sample", type=int, default=2, help="serial configs timed per stack")
    parser.add_argument(
        "--full", action="store_true", help="also train the real gtzan grid with early stopping"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default="fp32,bf16", help="vectorised arithmetic(s) to time: fp32, bf16"
    )
    paper = parser.add_argument_group("--paper: the whole grid at real sizes and dimensions")
    paper.add_argument(
        "--paper", action="store_true", help="train every dataset x representation pair (216 configs)"
    )
    paper.add_argument(
        "--pairs", default=None, help="comma-separated dataset/representation globs, e.g. 'gtzan_ff/*'"
    )
    paper.add_argument(
        "--scale", type=float, default=1.0, help="fraction of each split's examples (quick checks)"
    )
    paper.add_argument(
        "--max-steps", type=int, default=None, help="also stop every config after this many updates"
    )
    paper.add_argument(
        "--budget", type=float, default=None, help="seconds: start no pair after this (cheapest first)"
    )
    args = parser.parse_args()
    if args.paper:
        if args.precision == parser.get_default("precision"):  # bf16 where it has hardware support
            args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
        )
        bench_paper(args)
        return
    if args.quick:
        args.sizes, args.steps, args.serial_sample = "gtzan", 64, 1
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    for size in args.sizes.split(","):
        bench_size(
            size.strip(),
            args.steps,
            args.serial_sample,
            args.device,
            args.full and size.strip() == "gtzan",
            args.precision.split(","),
        )


if __name__ == "__main__":
    main()
