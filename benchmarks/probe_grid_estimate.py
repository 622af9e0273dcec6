"""Estimate the whole paper grid on a device from a roofline model.

The grid is 4 datasets x 6 representations x 216 configs.

No GPU is needed: the model counts, per update of each stack of the
vectorised trainer, the arithmetic of the first-layer products (forward and
weight gradient), the hidden/output layers and the validation passes (every 8
updates), and the memory traffic of the weight gradient and the fused Adam
update (32 bytes per parameter; 14 more per first-layer weight in bf16 for the
casts), and adds the host's cost of an update: the Python and the kernel
launches, measured here by training stacks of the same shape of operations on
8-dimensional features and 8 hidden units (whose arithmetic is nil), which a GPU
does not make faster. A device is a peak rate
for fp32 and bf16 products and a memory bandwidth.

``--calibrate`` checks the model where it can be checked: it measures this
machine's rates (a 64 x 4,800 x 512 product in fp32 and bf16, a 1 GiB copy,
a small op) and trains the four stacks of the GTZAN-sized grid for a few
updates, then prints the model's prediction beside the measured time. The
H100 figures are the public datasheet peaks derated to what large GEMMs and
streaming kernels typically reach (--derate-flops, --derate-bw).

The number of updates per stack is an assumption (``--updates``): with the
paper's early stopping a config runs s* + 2,056 updates (s*: its last
improving evaluation) and a stack runs as long as its slowest config; the
default, 8,192, is s* = 6,136 for the slowest config of every stack.

    python benchmarks/probe_grid_estimate.py                 # the H100 estimate
    python benchmarks/probe_grid_estimate.py --calibrate     # + the model against this CPU
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jukemir.datasets import get_dataset  # noqa: E402
from jukemir.representations import DIMS  # noqa: E402

# (train, valid) examples of each dataset's probe splits (docs/datasets.md)
SPLITS = {
    "gtzan_ff": (443, 197),
    "giantsteps_clips": (3687, 942),
    "magnatagatune": (18706, 1825),
    "emomusic": (504, 115),
}
STACKS = [((), 64), ((), 256), ((512,), 64), ((512,), 256)]  # (hidden, batch size): 54 configs each
CONFIGS_PER_STACK = 54


@dataclass
class Device:
    name: str
    fp32_flops: float  # product rate, FLOP/s
    bf16_flops: float
    bandwidth: float  # bytes/s
    host_s: dict  # host seconds per stacked update: {number of hidden layers: seconds}


# H100 SXM datasheet: 67 TFLOP/s fp32 (non-tensor), 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3.
H100 = dict(fp32=67e12, bf16=989e12, bandwidth=3.35e12)


def stack_seconds(
    device: Device,
    precision: str,
    dim: int,
    outputs: int,
    hidden: tuple,
    batch: int,
    n_valid: int,
    configs: int = CONFIGS_PER_STACK,
) -> float:
    """Modelled seconds of one update of one stack (amortised validation included)."""
    width = hidden[0] if hidden else outputs
    first = (dim + 1) * width
    rest = (width + 1) * outputs if hidden else 0
    rate = device.bf16_flops if precision == "bf16" else device.fp32_flops
    products = configs * 2 * 2 * batch * dim * width  # forward + weight gradient of the first layer
    products += configs * 2 * n_valid * dim * width / 8  # validation forward every 8 updates
    small = configs * 6 * batch * rest  # hidden/output layers, forward and backward (fp32)
    traffic = configs * (first + rest) * 32  # gradient write + fused Adam (read p, g, m, v; write p, m, v)
    if precision == "bf16":
        traffic += configs * first * 14  # weights to bf16 (4 + 2), gradient back to fp32 (2 + 2 + 4)
    return (
        products / rate + small / device.fp32_flops + traffic / device.bandwidth + device.host_s[len(hidden)]
    )


def grid_seconds(device: Device, precision: str, updates: int) -> dict:
    """Modelled seconds per (dataset, representation) of the paper grid."""
    out = {}
    for dataset, (_, n_valid) in SPLITS.items():
        outputs = get_dataset(dataset).num_outputs
        for rep, dim in DIMS.items():
            out[dataset, rep] = updates * sum(
                stack_seconds(device, precision, dim, outputs, hidden, batch, n_valid)
                for hidden, batch in STACKS
            )
    return out


def measure_host(short: int = 32, long: int = 512, repeats: int = 3) -> dict:
    """Seconds per update of 54-config stacks (batch 64; 8 features, 8 hidden units): the host's share.

    The best of ``repeats`` runs of ``short`` and of ``long`` updates; their
    difference per update removes the per-stack setup.
    """
    from probe_grid import capped, synthetic_data

    from jukemir.probe.config import ProbeConfig
    from jukemir.probe.grid import paper_grid_cfgs
    from jukemir.probe.stack import plan_stacks, train_probes

    data = synthetic_data("gtzan", dim=8)
    n_train = len(data.uids["train"])
    cfgs = paper_grid_cfgs(data.dataset, data.representation)
    out = {}
    for stack in plan_stacks(cfgs):
        if cfgs[stack[0]]["batch_size"] != 64:
            continue
        members = [
            ProbeConfig({**cfgs[i], "hidden_layer_sizes": [8] if cfgs[i]["hidden_layer_sizes"] else []})
            for i in stack
        ]
        train_probes(capped(members, 8, n_train), data, device="cpu", progress=False)  # warm up
        best = {}
        for n in (short, long):
            for _ in range(repeats):
                t0 = time.perf_counter()
                train_probes(capped(members, n, n_train), data, device="cpu", progress=False)
                best[n] = min(best.get(n, float("inf")), time.perf_counter() - t0)
        out[len(members[0]["hidden_layer_sizes"])] = max(0.0, (best[long] - best[short]) / (long - short))
    return out


def measure_cpu(host: dict) -> Device:
    """This machine's rates, measured."""

    def timed(fn, repeats=10):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats

    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = torch.randn(64, 4800, dtype=dtype), torch.randn(4800, 512, dtype=dtype)
        rates[dtype] = 2 * 64 * 4800 * 512 / timed(lambda x=x, w=w: torch.mm(x, w))
    a = torch.ones(1 << 28)  # 1 GiB
    b = torch.empty_like(a)
    bandwidth = 2 * a.numel() * 4 / timed(lambda: b.copy_(a), 3)
    return Device("this CPU (measured)", rates[torch.float32], rates[torch.bfloat16], bandwidth, host)


def calibrate(device: Device, updates: int = 32) -> None:
    """Model vs measurement for the four stacks of the GTZAN-sized grid on this machine."""
    from probe_grid import capped, synthetic_data

    from jukemir.probe.grid import paper_grid_cfgs
    from jukemir.probe.stack import plan_stacks, stack_key, train_probes

    data = synthetic_data("gtzan")
    cfgs = capped(paper_grid_cfgs(data.dataset, data.representation), updates, len(data.uids["train"]))
    print(f"\nmodel vs measurement, GTZAN-sized stacks, {updates} updates each, on {device.name}:")
    print(
        f"  fp32 products {device.fp32_flops / 1e9:.0f} GFLOP/s, bf16 {device.bf16_flops / 1e9:.0f} GFLOP/s, "
        f"copy bandwidth {device.bandwidth / 1e9:.1f} GB/s"
    )
    print(f"  {'stack':>16} {'precision':>9} {'model':>8} {'measured':>9} {'ratio':>6}")
    for precision in ("fp32", "bf16"):
        for stack in plan_stacks(cfgs):
            hidden, batch, _ = stack_key(cfgs[stack[0]])
            model = updates * stack_seconds(
                device,
                precision,
                data.num_features,
                data.spec.num_outputs,
                hidden,
                batch,
                len(data.uids["valid"]),
                len(stack),
            )
            t0 = time.time()
            train_probes([cfgs[i] for i in stack], data, device="cpu", progress=False, precision=precision)
            measured = time.time() - t0
            name = f"{'mlp512' if hidden else 'linear'} bs{batch}"
            print(f"  {name:>16} {precision:>9} {model:>7.1f}s {measured:>8.1f}s {measured / model:>5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=8192, help="updates per stack (see above)")
    parser.add_argument(
        "--derate-flops", type=float, default=0.4, help="fraction of peak product rate reached"
    )
    parser.add_argument("--derate-bw", type=float, default=0.7, help="fraction of peak bandwidth reached")
    parser.add_argument("--calibrate", action="store_true", help="also check the model against this CPU")
    args = parser.parse_args()
    host = measure_host()
    print(
        f"host cost per stacked update, measured here: linear {host[0] * 1e3:.2f} ms, "
        f"MLP {host[1] * 1e3:.2f} ms"
    )
    gpu = Device(
        f"H100 (datasheet x {args.derate_flops} flops, x {args.derate_bw} bandwidth)",
        H100["fp32"] * args.derate_flops,
        H100["bf16"] * args.derate_flops,
        H100["bandwidth"] * args.derate_bw,
        host,
    )
    print(
        f"paper grid: {len(SPLITS)} datasets x {len(DIMS)} representations x "
        f"{len(STACKS) * CONFIGS_PER_STACK} "
        f"configs, {args.updates} updates per stack, on {gpu.name}"
    )
    for precision in ("fp32", "bf16"):
        per_pair = grid_seconds(gpu, precision, args.updates)
        worst = max(per_pair, key=per_pair.get)
        host_share = args.updates * len(per_pair) * sum(host[len(h)] for h, _ in STACKS)
        print(
            f"  {precision}: {sum(per_pair.values()) / 60:6.1f} min in all "
            f"({host_share / 60:.1f} min of it host time); "
            f"slowest pair {worst[0]}/{worst[1]} {per_pair[worst]:.0f} s"
        )
    if args.calibrate:
        calibrate(measure_cpu(host))


if __name__ == "__main__":
    main()
