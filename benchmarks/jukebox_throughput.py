"""Jukebox extraction throughput and memory: the full 5B prior truncated to 36 blocks, random weights.

Builds the model the representation uses (VQ-VAE top-level encoder + top prior
truncated after the deepest layer, on the meta device, random weights drawn on
the device), writes N synthetic GTZAN-like clips (30 s at 22,050 Hz, so the
44.1 kHz resampling is paid as in the benchmarks), then measures

* end to end: ``run_folder`` (decoding threads ahead of the model, batches of
  ``--batch-size``, atomic .npy writes) -> clips/s;
* the model alone on decoded clips, per batch size -> clips/s, tokens/s,
  achieved TFLOP/s, model FLOP utilisation, peak device memory;
* decoding alone with ``--workers`` threads -> clips/s;

and prints the host-RAM arithmetic of loading the real 5B checkpoint.

    python benchmarks/jukebox_throughput.py                 # full size, needs a GPU (~6 GB weights)
    python benchmarks/jukebox_throughput.py --tiny          # a tiny config, runs on a CPU in seconds
    python benchmarks/jukebox_throughput.py --ram-check     # measured peak RSS of the streaming conversion

``--ram-check`` writes a legacy-format checkpoint at the real width (4,800) with
8 blocks (1.4 GB), converts its first 4 blocks in a child process and reports
that process's peak RSS, which does not grow with the file.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jukemir.representations.folder import run_folder  # noqa: E402
from jukemir.representations.jukebox import Jukebox  # noqa: E402
from jukemir.representations.jukebox import weights as W  # noqa: E402

TINY = dict(prior_width=64, prior_depth=8, heads=2, n_ctx=256, blocks=16, l_bins=256, emb_width=16, width=8, depth=2)
# Dense bf16/fp16 tensor-core peaks (TFLOP/s) and fp32 (non-tensor-core) peaks, by device name.
PEAKS = {"H100 PCIe": (756.0, 51.0), "H100": (989.4, 66.9), "H200": (989.4, 66.9), "A100": (312.0, 19.5)}


def peak_tflops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, single) in PEAKS.items():
        if key in name:
            return single if precision == "fp32" else half
    return None


def write_clips(folder: Path, n: int, seconds: float, sr: int = 22050) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"clip{i:04d}.wav", x.astype(np.float32), sr, subtype="PCM_16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_model(rep: Jukebox, audios: list, batch_size: int, peak: float | None) -> str:
    rep.batch_size = rep.preferred_batch = batch_size
    rep.batch(audios[:batch_size])  # warm-up (kernels, allocator)
    if rep.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rep.device)
    sync(rep.device)
    start = time.perf_counter()
    for i in range(0, len(audios), batch_size):
        rep.batch(audios[i : i + batch_size])
    sync(rep.device)
    seconds = time.perf_counter() - start
    n = len(audios)
    tflops = n * rep.flops_per_clip() / seconds / 1e12
    mfu = f"{100 * tflops / peak:.1f}%" if peak else "n/a (pass --peak-tflops)"
    memory = f"{torch.cuda.max_memory_allocated(rep.device) / 2**30:.2f} GiB" if rep.device.type == "cuda" else "n/a (CPU)"
    return (
        f"  batch {batch_size:2d}: {n / seconds:8.3f} clips/s  {n * rep.prior.hps.n_ctx / seconds:10.0f} tokens/s  "
        f"{tflops:9.4g} TFLOP/s  MFU {mfu}  peak device memory {memory}"
    )


def ram_check() -> None:
    """Convert 4 of 8 real-width blocks in a child process; report its peak RSS against the file size."""
    from collections import OrderedDict

    width, depth, keep = 4800, 8, 4
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "prior_level_2.pth.tar", Path(tmp) / "compact.safetensors"
        state = OrderedDict()
        for name, shape in _prior_shapes(width, depth).items():
            state[name] = torch.zeros(shape, dtype=torch.float16 if name.endswith(".w") else torch.float32)
        torch.save({"hps": {}, "model": state}, src, _use_new_zipfile_serialization=False)
        del state
        # VmHWM (peak RSS of this process image; ru_maxrss would carry the parent's over exec)
        code = (
            "import re, torch\n"
            "from jukemir.representations.jukebox import weights as W\n"
            "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "base = hwm()\n"
            f"shapes = {{k: tuple(v) for k, v in {_prior_shapes(width, keep, head=False)!r}.items()}}\n"
            f"W.convert({str(src)!r}, {str(dst)!r}, W.prior_key_filter({keep}), shapes, {{}})\n"
            "print(base, hwm())\n"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        base_kb, peak_kb = map(int, out.stdout.split())
        print(f"ram-check: legacy checkpoint {src.stat().st_size / 1e9:.2f} GB (width {width}, {depth} blocks) -> "
              f"{keep} blocks, {dst.stat().st_size / 1e9:.2f} GB")
        print(f"  converter peak RSS {peak_kb / 2**20:.2f} GiB (interpreter with torch: {base_kb / 2**20:.2f} GiB; "
              f"the largest single storage is the 8192x4800 fp32 position embedding, 0.16 GB)")


def _prior_shapes(width: int, depth: int, head: bool = True, n_ctx: int = 8192, l_bins: int = 2048) -> dict:
    s = width // 4
    shapes = {
        "y_emb.bow_genre_emb.emb.weight": (120, width), "y_emb.artist_emb.emb.weight": (4111, width),
        "y_emb.total_length_emb.emb.weight": (128, width), "y_emb.absolute_pos_emb.emb.weight": (128, width),
        "y_emb.relative_pos_emb.emb.weight": (128, width),
        "prior.x_emb.weight": (l_bins, width), "prior.pos_emb.pos_emb": (n_ctx, width),
    }
    for d in range(depth):
        b = f"prior.transformer._attn_mods.{d}"
        for name, shape in (("attn.c_attn", (width, 3 * s)), ("attn.c_proj", (s, width)),
                            ("mlp.c_fc", (width, width)), ("mlp.c_proj", (width, width))):
            shapes[f"{b}.{name}.w"], shapes[f"{b}.{name}.b"] = shape, (shape[1],)
        for ln in ("ln_0", "ln_1"):
            shapes[f"{b}.{ln}.weight"], shapes[f"{b}.{ln}.bias"] = (width,), (width,)
    if head:
        shapes["prior.x_out.weight"] = (l_bins, width)
    return shapes


def print_memory_arithmetic() -> None:
    full = W.prior_bytes(4800, 72, 8192, 2048)
    compact = W.prior_bytes(4800, 36, 8192, 2048, output_head=False)
    print("5B prior checkpoint arithmetic (bytes):")
    print(f"  72 blocks: fp16 Conv1D {full['conv_fp16']:,} + fp32 biases/LayerNorms {full['small_fp32']:,} + "
          f"fp32 embeddings {full['embeddings']:,} = {full['total']:,} (file: {W.PRIOR_5B_SIZE:,})")
    print(f"  compact 36 blocks: {compact['total']:,}; conversion holds <= 2 x 157,286,400 (position embedding)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny config (CPU smoke run)")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--layers", default="36", help="comma-separated blocks (the prior is truncated after the deepest)")
    p.add_argument("--clips", type=int, default=None, help="clips to run (default 32 on GPU, 8 with --tiny)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length; written at 22,050 Hz")
    p.add_argument("--batch-size", type=int, default=None, help="end-to-end batch size (default 4 on GPU, 2 on CPU)")
    p.add_argument("--batch-sizes", default=None, help="model-only batch sizes (default 1 and --batch-size)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (known GPUs are looked up)")
    p.add_argument("--ram-check", action="store_true", help="only measure the streaming conversion's peak RSS")
    args = p.parse_args()

    print_memory_arithmetic()
    if args.ram_check:
        ram_check()
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    layers = [int(x) for x in args.layers.split(",")]
    if args.tiny:
        layers = [min(x, TINY["prior_depth"]) for x in layers]
    n_clips = args.clips or (8 if args.tiny else 32)
    batch_size = args.batch_size or (4 if device.type == "cuda" else 2)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else sorted({1, batch_size})

    start = time.perf_counter()
    rep = Jukebox(device=str(device), precision=args.precision, layers=layers, weights="random",
                  hps=TINY if args.tiny else None, batch_size=batch_size)
    sync(device)
    build = time.perf_counter() - start
    params = sum(t.numel() for t in rep.prior.state_dict().values())
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"precision {args.precision}, {rep.prior.depth} blocks of width {rep.dim}, {params / 1e6:,.1f} M prior "
          f"parameters, built in {build:.1f} s")
    prior_flops = rep.prior.flops_per_token() * rep.prior.hps.n_ctx
    print(f"FLOPs per clip: {rep.flops_per_clip() / 1e12:.4g} TFLOP (prior {prior_flops / 1e12:.4g} TFLOP, "
          f"VQ-VAE encoder {rep.vqvae.flops(rep.crop_samples) / 1e9:.1f} GFLOP)")
    peak = peak_tflops(device, args.precision, args.peak_tflops)

    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        write_clips(inputs, n_clips, args.seconds)
        files = sorted(inputs.iterdir())

        start = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            audios = list(pool.map(rep.load, files))
        decode = time.perf_counter() - start
        print(f"decode only ({args.workers} threads, {args.seconds:.0f} s clips at 22,050 Hz -> 44.1 kHz, kaiser_best): "
              f"{n_clips / decode:.2f} clips/s")

        print("model only (decoded clips in memory):")
        for bs in batch_sizes:
            print(measure_model(rep, audios, bs, peak))

        rep.batch_size = rep.preferred_batch = batch_size
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        report = run_folder(rep, inputs, outputs, workers=args.workers, progress=False)
        sync(device)
        seconds = time.perf_counter() - start
        if not report.ok:
            raise SystemExit(f"end-to-end run failed: {report.failed[:3]}")
        memory = f", peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""
        print(f"end to end (run_folder, batch {batch_size}, {args.workers} decoding threads): "
              f"{n_clips / seconds:.3f} clips/s{memory}")
    print(f"host peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
