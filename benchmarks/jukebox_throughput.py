"""Jukebox extraction throughput, memory, fidelity and a kernel profile.

The model is the 5B prior truncated to 36 blocks, with random weights.

Builds the model the representation uses (VQ-VAE top-level encoder + top prior
truncated after the deepest layer, on the meta device, random weights drawn on
the device), writes N synthetic GTZAN-like clips (30 s at 22,050 Hz, so the
44.1 kHz resampling is paid as in the benchmarks), then measures

* decoding alone: ``rep.load`` with ``--workers`` threads, after every thread
  decoded one clip untimed (-> clips/s; the first, cold call printed apart);
* for each ``--modes`` entry (``bf16``, ``fp16``, ``fp32``, ``tf32``, each
  optionally ``+fuse`` (fuse_mlp) and ``+compile`` (torch_compile)), one model
  at a time: the model alone on the decoded clips, per batch size, after a
  warm-up batch of that size (kernels, allocator, compilation; its time is
  printed) -> clips/s, tokens/s, achieved TFLOP/s, share of the device's peak,
  peak device memory;
* fidelity of each mode's pooled features against ``fp32`` (the original's
  arithmetic; the paper's features were made so) on the same clips and the
  same random weights: worst cosine similarity and worst relative L2 error;
* end to end with the first mode: ``run_folder`` (decoding threads ahead of
  the model, batches of ``--batch-size``, atomic .npy writes) -> clips/s;
* ``--profile``: one forward of the first mode (eager) under torch.profiler,
  device time by category (matrix products, attention, layer norms, casts,
  copies/reshapes, elementwise, VQ-VAE encoder, other), and the top kernels;

and prints the host-RAM arithmetic of loading the real 5B checkpoint.

    python benchmarks/jukebox_throughput.py                 # full size, needs a GPU (~6 GB weights)
    python benchmarks/jukebox_throughput.py --modes bf16,bf16+fuse,bf16+fuse+compile,fp32,tf32 --profile
    python benchmarks/jukebox_throughput.py --tiny          # a tiny config, runs on a CPU in seconds
    python benchmarks/jukebox_throughput.py --ram-check     # measured peak RSS of the streaming conversion

``--ram-check`` writes a legacy-format checkpoint at the real width (4,800) with
8 blocks (1.4 GB), converts its first 4 blocks in a child process and reports
that process's peak RSS, which does not grow with the file.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_throughput import measure as measure_decode  # noqa: E402
from decode_throughput import write_clips  # noqa: E402

from jukemir.representations.folder import run_folder  # noqa: E402
from jukemir.representations.jukebox import Jukebox  # noqa: E402
from jukemir.representations.jukebox import weights as W  # noqa: E402

TINY = dict(
    prior_width=64, prior_depth=8, heads=2, n_ctx=256, blocks=16, l_bins=256, emb_width=16, width=8, depth=2
)
# Dense bf16/fp16 tensor-core peaks, TF32 tensor-core peaks and fp32 (non-tensor-core) peaks
# (TFLOP/s), by device.
PEAKS = {
    "H100 PCIe": (756.0, 378.0, 51.0),
    "H100": (989.4, 494.7, 66.9),
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
}


def peak_tflops(device: torch.device, precision: str, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf32, single) in PEAKS.items():
        if key in name:
            return {"fp32": single, "tf32": tf32}.get(precision, half)
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_mode(mode: str) -> dict:
    """``bf16+fuse+compile`` -> Jukebox options."""
    precision, *flags = mode.split("+")
    unknown = set(flags) - {"fuse", "compile"}
    if unknown:
        raise SystemExit(f"unknown mode flag(s) {sorted(unknown)} in {mode!r}: use +fuse and/or +compile")
    return {"precision": precision, "fuse_mlp": "fuse" in flags, "torch_compile": "compile" in flags}


def measure_model(rep: Jukebox, audios: list, batch_size: int, peak: float | None) -> tuple[str, list]:
    """One line of figures for ``batch_size``, and the features of the timed pass."""
    rep.batch_size = rep.preferred_batch = batch_size
    sync(rep.device)
    start = time.perf_counter()
    rep.batch(audios[:batch_size])  # warm-up (kernels, allocator, compilation for this shape)
    sync(rep.device)
    warm = time.perf_counter() - start
    if rep.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rep.device)
    start = time.perf_counter()
    features = []
    for i in range(0, len(audios), batch_size):
        features += rep.batch(audios[i : i + batch_size])
    sync(rep.device)
    seconds = time.perf_counter() - start
    n = len(audios)
    tflops = n * rep.flops_per_clip() / seconds / 1e12
    share = f"{100 * tflops / peak:.1f}% of {peak:g}" if peak else "n/a (pass --peak-tflops)"
    memory = (
        f"{torch.cuda.max_memory_allocated(rep.device) / 2**30:.2f} GiB"
        if rep.device.type == "cuda"
        else "n/a (CPU)"
    )
    line = (
        f"  batch {batch_size:2d}: {n / seconds:8.3f} clips/s  "
        f"{n * rep.prior.hps.n_ctx / seconds:10.0f} tokens/s  "
        f"{tflops:9.4g} TFLOP/s  peak share {share}  peak device memory {memory}  "
        f"(warm-up batch {warm:.1f} s)"
    )
    return line, features


def fidelity(ref: np.ndarray, out: np.ndarray) -> str:
    """Worst and mean cosine similarity and relative L2 error.

    Of per-clip feature vectors ``out`` vs ``ref``.
    """
    ref, out = ref.reshape(len(ref), -1).astype(np.float64), out.reshape(len(out), -1).astype(np.float64)
    cos = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    rel = np.linalg.norm(out - ref, axis=1) / np.linalg.norm(ref, axis=1)
    return (
        f"cosine min {cos.min():.6f} mean {cos.mean():.6f}; relative L2 error max {rel.max():.3e} "
        f"mean {rel.mean():.3e} ({len(ref)} clips)"
    )


CATEGORIES = [  # (category, aten ops): a kernel goes to the outermost op of its call stack found here
    (
        "matrix products",
        ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    ),
    (
        "attention",
        (
            "aten::scaled_dot_product_attention",
            "aten::_scaled_dot_product_flash_attention",
            "aten::_scaled_dot_product_efficient_attention",
            "aten::_scaled_dot_product_cudnn_attention",
        ),
    ),
    ("layer norm", ("aten::layer_norm", "aten::native_layer_norm")),
    ("casts", ("aten::to", "aten::_to_copy")),
    (
        "copies/reshapes",
        (
            "aten::reshape",
            "aten::contiguous",
            "aten::clone",
            "aten::cat",
            "aten::pad",
            "aten::constant_pad_nd",
            "aten::copy_",
            "aten::zeros_like",
            "aten::zeros",
            "aten::fill_",
            "aten::zero_",
        ),
    ),
    (
        "elementwise (gelu, adds)",
        ("aten::add", "aten::add_", "aten::mul", "aten::sigmoid", "aten::silu", "aten::div"),
    ),
]
VQVAE_RANGE = "VQ-VAE encoder"


def categorise(event) -> str:
    names, node = [], event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    if VQVAE_RANGE in names:
        return VQVAE_RANGE
    for name in reversed(names):  # outermost first
        if "CompiledFunction" in name or "Torch-Compiled Region" in name:
            return "compiled (fused) regions"
        for category, ops in CATEGORIES:
            if name in ops:
                return category
    return "other (embeddings, pooling, ...)"


def profile(rep: Jukebox, audios: list, batch_size: int) -> None:
    """Device time of one forward (VQ-VAE encode + prior) by category, and the top kernels."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    cuda = rep.device.type == "cuda"
    clips = [rep._prepare(a) for a in audios[:batch_size]]
    rep.batch_size = batch_size
    rep.batch(audios[:batch_size])  # warm
    sync(rep.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof, torch.inference_mode():
        with record_function(VQVAE_RANGE):
            tokens = rep.encode(clips)
        rep._embed(tokens)
        sync(rep.device)

    def self_time(ev) -> float:
        if cuda:
            return getattr(ev, "self_device_time_total", None) or getattr(ev, "self_cuda_time_total", 0.0)
        return ev.self_cpu_time_total

    from torch.autograd import DeviceType

    totals = defaultdict(float)
    for ev in prof.events():  # operators (CPU side): each carries the kernels it launched; kernel events
        if ev.device_type != DeviceType.CPU:  # are listed too, and would count twice
            continue
        t = self_time(ev)
        if t > 0 and ev.name != VQVAE_RANGE:
            totals[categorise(ev)] += t
    total = sum(totals.values())
    what = (
        "device (kernel) time"
        if cuda
        else "CPU self time (no GPU: the categories, not the shares, carry over)"
    )
    print(
        f"profile of one forward, batch {batch_size}, precision {rep.precision}: "
        f"{total / 1e3:.1f} ms of {what}"
    )
    for category, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {category:<34} {t / 1e3:10.2f} ms  {100 * t / total:5.1f} %")
    sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort_by, row_limit=15, max_name_column_width=60)
    except Exception:  # noqa: BLE001 - the sort key's name changed across torch versions
        table = prof.key_averages().table(
            sort_by="self_device_time_total", row_limit=15, max_name_column_width=60
        )
    print("  top ops by self time:")
    print("\n".join("    " + line for line in table.splitlines()))


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
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        base_kb, peak_kb = map(int, out.stdout.split())
        print(
            f"ram-check: legacy checkpoint {src.stat().st_size / 1e9:.2f} GB "
            f"(width {width}, {depth} blocks) -> "
            f"{keep} blocks, {dst.stat().st_size / 1e9:.2f} GB"
        )
        print(
            f"  converter peak RSS {peak_kb / 2**20:.2f} GiB "
            f"(interpreter with torch: {base_kb / 2**20:.2f} GiB; "
            f"the largest single storage is the 8192x4800 fp32 position embedding, 0.16 GB)"
        )


def _prior_shapes(width: int, depth: int, head: bool = True, n_ctx: int = 8192, l_bins: int = 2048) -> dict:
    s = width // 4
    shapes = {
        "y_emb.bow_genre_emb.emb.weight": (120, width),
        "y_emb.artist_emb.emb.weight": (4111, width),
        "y_emb.total_length_emb.emb.weight": (128, width),
        "y_emb.absolute_pos_emb.emb.weight": (128, width),
        "y_emb.relative_pos_emb.emb.weight": (128, width),
        "prior.x_emb.weight": (l_bins, width),
        "prior.pos_emb.pos_emb": (n_ctx, width),
    }
    for d in range(depth):
        b = f"prior.transformer._attn_mods.{d}"
        for name, shape in (
            ("attn.c_attn", (width, 3 * s)),
            ("attn.c_proj", (s, width)),
            ("mlp.c_fc", (width, width)),
            ("mlp.c_proj", (width, width)),
        ):
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
    print(
        f"  72 blocks: fp16 Conv1D {full['conv_fp16']:,} + fp32 biases/LayerNorms {full['small_fp32']:,} + "
        f"fp32 embeddings {full['embeddings']:,} = {full['total']:,} (file: {W.PRIOR_5B_SIZE:,})"
    )
    print(
        f"  compact 36 blocks: {compact['total']:,}; conversion holds <= 2 x 157,286,400 (position embedding)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny config (CPU smoke run)")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--modes", default="bf16", help="comma-separated, e.g. bf16,bf16+fuse,bf16+fuse+compile,fp32,tf32"
    )
    p.add_argument("--precision", default=None, help="shorthand for --modes with one plain precision")
    p.add_argument(
        "--layers", default="36", help="comma-separated blocks (the prior is truncated after the deepest)"
    )
    p.add_argument("--clips", type=int, default=None, help="clips to run (default 32 on GPU, 8 with --tiny)")
    p.add_argument(
        "--fp32-clips", type=int, default=None, help="clips for fp32/tf32 modes (default: --clips)"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="clip length; written at 22,050 Hz")
    p.add_argument(
        "--batch-size", type=int, default=None, help="end-to-end batch size (default 4 on GPU, 2 on CPU)"
    )
    p.add_argument("--batch-sizes", default=None, help="model-only batch sizes (default 1 and --batch-size)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run_folder measurement")
    p.add_argument("--profile", action="store_true", help="kernel table of one forward of the first mode")
    p.add_argument("--profile-batch", type=int, default=1)
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for the share (known GPUs are looked up)"
    )
    p.add_argument("--features-out", type=Path, default=None, help="save each mode's pooled features (.npz)")
    p.add_argument(
        "--reference", type=Path, default=None, help="an --features-out file whose fp32 features to compare"
    )
    p.add_argument(
        "--ram-check", action="store_true", help="only measure the streaming conversion's peak RSS"
    )
    args = p.parse_args()

    print_memory_arithmetic()
    if args.ram_check:
        ram_check()
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    modes = [args.precision] if args.precision else args.modes.split(",")
    options = {mode: parse_mode(mode) for mode in modes}
    layers = [int(x) for x in args.layers.split(",")]
    if args.tiny:
        layers = [min(x, TINY["prior_depth"]) for x in layers]
    n_clips = args.clips or (8 if args.tiny else 32)
    batch_size = args.batch_size or (4 if device.type == "cuda" else 2)
    batch_sizes = (
        [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else sorted({1, batch_size})
    )
    print(
        f"torch {torch.__version__}, device {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), {os.cpu_count()} cpus"
    )

    def build(mode: str, batch: int) -> Jukebox:
        start = time.perf_counter()
        rep = Jukebox(
            device=str(device),
            layers=layers,
            weights="random",
            hps=TINY if args.tiny else None,
            batch_size=batch,
            **options[mode],
        )
        sync(device)
        params = sum(t.numel() for t in rep.prior.state_dict().values())
        print(
            f"[{mode}] {rep.prior.depth} blocks of width {rep.dim}, {params / 1e6:,.1f} M prior parameters, "
            f"built in {time.perf_counter() - start:.1f} s"
        )
        return rep

    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        files = write_clips(inputs, n_clips, args.seconds)
        rep = build(modes[0], batch_size)
        prior_flops = rep.prior.flops_per_token() * rep.prior.hps.n_ctx
        print(
            f"FLOPs per clip: {rep.flops_per_clip() / 1e12:.4g} TFLOP (prior {prior_flops / 1e12:.4g} TFLOP, "
            f"VQ-VAE encoder {rep.vqvae.flops(rep.crop_samples) / 1e9:.1f} GFLOP)"
        )
        cold, rate, audios = measure_decode(rep.load, files, args.workers)
        print(
            f"decode only ({args.workers} threads, {args.seconds:.0f} s clips at 22,050 Hz -> 44.1 kHz, "
            f"kaiser_best, warm): {rate:.2f} clips/s (first call, cold: {cold:.2f} s)"
        )

        if not args.no_e2e:
            rep.batch_size = rep.preferred_batch = batch_size
            rep.batch(audios[:batch_size])  # the same warm-up as the model-only figures
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            report = run_folder(rep, inputs, outputs, workers=args.workers, progress=False)
            sync(device)
            seconds = time.perf_counter() - start
            if not report.ok:
                raise SystemExit(f"end-to-end run failed: {report.failed[:3]}")
            memory = (
                f", peak device memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
                if device.type == "cuda"
                else ""
            )
            print(
                f"[{modes[0]}] end to end (run_folder, batch {batch_size}, {args.workers} decoding threads, "
                f"{n_clips} clips): {n_clips / seconds:.3f} clips/s{memory}"
            )
        if args.profile:
            try:
                profile(rep, audios, args.profile_batch)
            except Exception as exc:  # noqa: BLE001 - a profiler quirk must not cost the other figures
                print(f"profile failed: {type(exc).__name__}: {exc}")

        features = {}
        for i, mode in enumerate(modes):
            if i:
                del rep
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rep = build(mode, batch_size)
            slow = options[mode]["precision"] in ("fp32", "tf32")
            clips = audios[: args.fp32_clips] if slow and args.fp32_clips else audios
            peak = peak_tflops(device, options[mode]["precision"], args.peak_tflops)
            print(f"[{mode}] model only ({len(clips)} decoded clips in memory):")
            for bs in [b for b in batch_sizes if b <= len(clips)] or [len(clips)]:
                line, out = measure_model(rep, clips, bs, peak)
                print(line)
            features[mode] = np.stack(out)  # the clips' features from the last timed pass
        if args.features_out:
            np.savez(args.features_out, **features)
        ref = features.get("fp32")
        if ref is None and args.reference:
            with np.load(args.reference) as saved:
                ref = saved.get("fp32")
        if ref is not None:
            print("fidelity vs fp32 (pooled features, same clips, same random weights):")
            for mode in modes:
                if mode != "fp32":
                    n = min(len(features[mode]), len(ref))
                    print(f"  {mode}: {fidelity(ref[:n], features[mode][:n])}")
    print(f"host peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
