"""The ``jukemir`` command: one subcommand per pipeline stage.

Thin by design: each subcommand parses its arguments and calls one library
function. ``jukemir <command> --help`` documents each.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from . import __version__
from .device import torch_device
from .errors import JukemirError, UserError, one_line
from .io import DiskFullError
from .workers import Terminated, terminate_like_interrupt


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; an option's default appended only when it has one worth saying.

    No "(default: None)" or "(default: False)", and nothing when the help text
    already states its default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
            and "%(default)" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _layers(text: str) -> list[int] | str:
    return "all" if text.strip() == "all" else _int_list(text)


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value): the value as JSON when it parses (numbers, true, null, lists),
    else the text."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python identifier, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


# ---------------------------------------------------------------- extract
def _add_extract(sub):
    p = sub.add_parser(
        "extract",
        help="embed a folder of audio into a folder of .npy vectors",
        formatter_class=_Formatter,
        description="Embed every file of INPUT_DIR (sorted by name) into OUTPUT_DIR/<stem>.npy.\n"
        "Existing valid outputs are skipped; a bad file is reported and skipped; the exit\n"
        "status is non-zero if any file failed. Failures are also logged to\n"
        "OUTPUT_DIR/.jukemir/errors.jsonl.",
    )
    p.add_argument(
        "representation",
        help="chroma, mfcc, choi, musicnn, clmr, jukebox, mert-v1-95m, mert-v1-330m, "
        "clap-music, an installed plugin's name, hf:<model id or folder>, hear:<module> or module:Class",
    )
    p.add_argument(
        "input_dir", nargs="?", default=None, help="folder of audio files (default in a container: /input)"
    )
    p.add_argument(
        "output_dir",
        nargs="?",
        default=None,
        help="folder for the <stem>.npy outputs, created if needed (default in a container: /output)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="instead of INPUT_DIR OUTPUT_DIR: <cache>/processed/DATASET/wav into "
        "<cache>/representations/DATASET/<the representation's folder name>",
    )
    p.add_argument(
        "--batch_size", "--batch-size", type=int, default=None, help="files per batch (with --batch_idx)"
    )
    p.add_argument(
        "--batch_idx", "--batch-idx", type=int, default=None, help="process only batch I of the sorted list"
    )
    p.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="audio-decoding threads running ahead of the model",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--representations", default=None, help=argparse.SUPPRESS)  # the original's unused flag
    _executor_args(p)
    g = p.add_argument_group("model options (each applies to the representation named)")
    g.add_argument(
        "--weights",
        default=None,
        help=(
            "local weights instead of the download: choi: folder of weights_layer{0..4}_theano.hdf5; "
            "musicnn: TF checkpoint folder or .npz; clmr: checkpoint; "
            "jukebox: folder with vqvae.pth.tar and prior_level_2.pth.tar; "
            "mert-v1-*: folder in the Hugging Face format; clap-music: checkpoint"
        ),
    )
    g.add_argument(
        "--precision",
        choices=["bf16", "fp16", "fp32", "tf32"],
        default=None,
        help="jukebox arithmetic (default: bf16; fp32 = the original's; tf32 = fp32 with the prior's "
        "products in TF32 on CUDA, see docs/fidelity/jukebox.md for its bound)",
    )
    g.add_argument(
        "--fuse-mlp",
        action="store_true",
        default=None,
        help="jukebox, bf16/fp16 only: fold quick_gelu's scale into the MLP weights (one kernel less)",
    )
    g.add_argument(
        "--torch-compile",
        action="store_true",
        default=None,
        help="jukebox: compile each transformer block with torch.compile (GPU; minutes to compile)",
    )
    g.add_argument(
        "--layers",
        type=_layers,
        default=None,
        help="jukebox: comma-separated block outputs, e.g. 12,24,36 (default: 36, the paper's); "
        "mert, hf: hidden states, 0 = the transformer's input, all = every one (default: the last block)",
    )
    g.add_argument(
        "--pool",
        choices=["mean", "none"],
        default=None,
        help="jukebox, mert, hf: mean over time (default), or keep the time axis",
    )
    g.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        help="mert, hf: window length (default: mert 5, hf 10); 0 = the whole clip at once",
    )
    g.add_argument(
        "-O",
        "--option",
        type=_option,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="any other option of the representation (e.g. a plugin's), VALUE as JSON or text; repeatable",
    )
    g.add_argument(
        "--allow-short",
        action="store_true",
        default=None,
        help="jukebox: accept clips shorter than 8192 tokens (about 23.8 s)",
    )
    g.add_argument(
        "--model",
        dest="model",
        default=None,
        help=(
            "musicnn: MSD_musicnn_big (default, the paper's), MSD_musicnn, MTT_musicnn; jukebox: 5b (default)"
        ),
    )
    g.add_argument(
        "--musicnn-log",
        choices=["float16", "float32"],
        default=None,
        help="musicnn: float16 (default) = the original's rounding, which can give inf; float32 = fixed",
    )
    g.add_argument(
        "--choi-batch-stats",
        choices=["on", "off"],
        default=None,
        help="choi: on (default) = the original's batch-dependent features; off = per-file",
    )
    g.add_argument(
        "--clmr-frame",
        type=int,
        default=None,
        help="clmr: 59409 (default) = the paper's framing, 59049 = corrected",
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="chroma, mfcc: refuse files longer than this (default: 1800; they hold the whole clip in "
        "memory, about 4.5 GB per hour)",
    )
    g.add_argument(
        "--handcrafted-librosa",
        choices=["0.8.1", "installed"],
        default=None,
        help=(
            "chroma, mfcc: 0.8.1 (default) = the original's librosa 0.8.1 computation (re-implemented); "
            "installed = the installed librosa's own defaults"
        ),
    )
    p.set_defaults(func=_cmd_extract)


def _executor_args(p):
    p.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="run here, or shard over a Ray cluster"
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (e.g. auto or ray://host:10001); none starts a local Ray",
    )


def _executor(args):
    from .executors import get_executor

    return get_executor(args.executor, address=args.address) if args.executor != "local" else None


REP_OPTIONS = (
    "weights",
    "precision",
    "layers",
    "pool",
    "allow_short",
    "model",
    "musicnn_log",
    "choi_batch_stats",
    "clmr_frame",
    "handcrafted_librosa",
    "max_seconds",
    "window_seconds",
    "fuse_mlp",
    "torch_compile",
)


CONTAINER_INPUT, CONTAINER_OUTPUT = "/input", "/output"


def _extract_folders(args) -> tuple[str, str]:
    """INPUT_DIR and OUTPUT_DIR, or the container's /input and /output when they are left out there."""
    usage = f"jukemir extract {args.representation} INPUT_DIR OUTPUT_DIR"
    input_dir, output_dir = args.input_dir, args.output_dir
    if args.dataset is not None:
        from .cache import Layout

        if input_dir is not None or output_dir is not None:
            raise UserError("give either --dataset or INPUT_DIR OUTPUT_DIR, not both")
        layout = Layout()
        return str(layout.wav(args.dataset)), str(layout.representations(args.dataset, args.representation))
    if input_dir is None:
        if not os.path.isdir(CONTAINER_INPUT):
            raise UserError(f"no INPUT_DIR given (and no {CONTAINER_INPUT}, a container's default): {usage}")
        input_dir = CONTAINER_INPUT
    if output_dir is None:
        if not os.path.isdir(CONTAINER_OUTPUT):
            raise UserError(
                f"no OUTPUT_DIR given (and no {CONTAINER_OUTPUT}, a container's default): {usage}"
            )
        output_dir = CONTAINER_OUTPUT
    return input_dir, output_dir


def _cmd_extract(args) -> int:
    from .representations.folder import run_folder

    input_dir, output_dir = _extract_folders(args)
    options = {k: getattr(args, k) for k in REP_OPTIONS if getattr(args, k) is not None}
    options.update(dict(args.option or ()))
    if args.device is not None:
        options["device"] = args.device
    executor = _executor(args)
    if executor is not None:
        if args.batch_idx is not None:
            raise UserError("--batch_idx selects one batch for one worker; with --executor ray leave it out")
        summary = executor.extract(
            args.representation,
            input_dir,
            output_dir,
            batch_size=args.batch_size or 256,
            options=options,
            progress=not args.no_progress,
        )
        return 0 if summary.ok else 1
    report = run_folder(
        args.representation,
        input_dir,
        output_dir,
        batch_size=args.batch_size,
        batch_idx=args.batch_idx,
        options=options,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return 0 if report.ok else 1


# ---------------------------------------------------------------- datasets (download, process, import)
def _mirror_jobs_options(p, jobs: int) -> None:
    p.add_argument("--jobs", type=int, default=jobs, help="parallel downloads / decoding processes")
    p.add_argument(
        "--mirror",
        default=None,
        help=(
            "base URL or folder tried before the manifest URLs, as <mirror>/<path_rel>; "
            "unset: $JUKEMIR_MIRROR"
        ),
    )


def _add_download(sub):
    p = sub.add_parser(
        "download",
        help="download and verify a benchmark's raw files, the paper's metadata, or its precomputed features",
        formatter_class=_Formatter,
        description="Download into $JUKEMIR_CACHE_DIR/datasets (resumable, checksum-verified):\n"
        "  jukemir download gtzan|magnatagatune|giantsteps|emomusic   raw files + the paper's metadata\n"
        "  jukemir download metadata                                 the paper's metadata of all four, also\n"
        "                                                            "
        "as processed/<dataset>/meta.json if absent\n"
        "  jukemir download precomputed [DATASET] [REPRESENTATION]   the paper's features, unpacked into\n"
        "                                                            "
        "representations/<dataset>/<representation>/",
    )
    p.add_argument("target", help="a dataset, metadata, or precomputed")
    p.add_argument("selectors", nargs="*", help="with precomputed: a dataset and/or a representation")
    _mirror_jobs_options(p, jobs=4)
    p.set_defaults(func=_cmd_download)


def _cmd_download(args) -> int:
    from .datasets import precomputed, process

    if args.target == "precomputed":
        for tag, folder, n in precomputed.download_precomputed(
            *args.selectors, jobs=args.jobs, mirror=args.mirror
        ):
            print(f"{tag}: {n} .npy files in {folder}")
        return 0
    if args.selectors:
        raise UserError(f"unexpected arguments after {args.target}: {' '.join(args.selectors)}")
    if args.target == "synthetic":
        print("download synthetic: nothing to download; `jukemir process synthetic` generates it")
        return 0
    if args.target == "metadata":
        assets = [process.metadata_asset(name) for name in process.MODULES]
        paths = process.fetch(assets, mirror=args.mirror, jobs=args.jobs)
        for path in process.install_metadata(mirror=args.mirror):
            print(f"{path}: the paper's metadata")
    else:
        paths = process.download_dataset(args.target, jobs=args.jobs, mirror=args.mirror)
    print(f"download {args.target}: {len(paths)} files verified")
    return 0


def _add_process(sub):
    p = sub.add_parser(
        "process",
        help="decode a benchmark into processed/<dataset>/wav/<uid>.wav + meta.json",
        formatter_class=_Formatter,
        description="Download what is missing, unpack, and write one mono 16-bit WAV per item at the\n"
        "source rate, plus meta.json. Resumable: valid WAVs are kept. --verify-metadata only\n"
        "derives the metadata from the raw annotations and compares it with the paper's\n"
        "(exit status 1 if they differ); it writes no WAVs.",
    )
    p.add_argument(
        "dataset",
        help="gtzan_ff, magnatagatune, giantsteps_clips or emomusic (gtzan, giantsteps "
        "accepted), or synthetic (generated)",
    )
    p.add_argument(
        "--metadata",
        choices=["canonical", "derived"],
        default="canonical",
        help="the paper's metadata files, or metadata derived from the raw annotations",
    )
    p.add_argument(
        "--verify-metadata", action="store_true", help="compare derived and canonical metadata, then stop"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _mirror_jobs_options(p, jobs=os.cpu_count() or 1)
    p.set_defaults(func=_cmd_process)


def _cmd_process(args) -> int:
    from .datasets import process

    if args.dataset == "synthetic":  # generated, not downloaded: the demo's dataset, for reproduce/ runs
        from .datasets import synthetic

        folder = synthetic.generate(progress=not args.no_progress)
        print(f"process synthetic: generated -> {folder} (meta.json written)")
        return 0

    if args.verify_metadata:
        problems = process.verify_metadata(args.dataset, jobs=args.jobs, mirror=args.mirror)
        for line in problems:
            print(line)
        print(f"verify {args.dataset}: derived and canonical metadata {'DIFFER' if problems else 'agree'}")
        return 1 if problems else 0
    report = process.process_dataset(
        args.dataset,
        jobs=args.jobs,
        metadata=args.metadata,
        mirror=args.mirror,
        progress=not args.no_progress,
    )
    return _print_report(report)


def _print_report(report) -> int:
    for _, error in report.failed:
        print(error, file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def _add_import(sub):
    p = sub.add_parser(
        "import",
        help="import your own dataset (audio folder + labels CSV) into processed/<name>/",
        formatter_class=_Formatter,
        description="CSV columns: file (relative to --audio), optional id, the label column(s)\n"
        "(multiclass: a class; multilabel: tags separated by ';'; regression: numbers), and an\n"
        "optional split column (train/valid/test). Writes processed/<name>/{wav/, meta.json,\n"
        "dataset.json}; then `jukemir extract`, probe and evaluate work on <name>.",
    )
    p.add_argument("name", help="dataset name (letters, digits, _ . -)")
    p.add_argument("--audio", required=True, help="folder of audio files")
    p.add_argument("--labels", required=True, help="labels CSV")
    p.add_argument(
        "--task",
        required=True,
        choices=["multiclass", "multilabel", "regression"],
        help="one class per item, a set of tags per item, or numbers per item",
    )
    p.add_argument(
        "--label-column", default="label", help="label column; comma-separated for several regression targets"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--split-column", default=None, help="CSV column holding train/valid/test")
    group.add_argument("--split", default="80/10/10", help="random train/valid/test proportions")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="decoding processes")
    p.add_argument("--overwrite", action="store_true", help="rewrite WAVs that already exist")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_import)


def _cmd_import(args) -> int:
    from .datasets.custom import import_dataset

    report = import_dataset(
        args.name,
        args.audio,
        args.labels,
        args.task,
        label_columns=[c.strip() for c in args.label_column.split(",") if c.strip()],
        split_column=args.split_column,
        split=args.split,
        seed=args.seed,
        jobs=args.jobs,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    return _print_report(report)


# ---------------------------------------------------------------- probes (grid, probe, evaluate)
def _add_grid_config(sub):
    p = sub.add_parser(
        "grid-config",
        help="write a grid of probe configs to probes/<dataset>/<representation>/<uid>.json",
        formatter_class=_Formatter,
        description="Write one JSON file per config of the grid (the paper's 216, or the 12-config demo\n"
        "grid) to $JUKEMIR_CACHE_DIR/probes/<dataset>/<representation>/<uid>.json.",
    )
    p.add_argument(
        "dataset",
        help="a benchmark (gtzan_ff, magnatagatune, giantsteps_clips, emomusic), "
        "synthetic, or a dataset you imported",
    )
    p.add_argument(
        "representation",
        help="whose features the probes will read: chroma, mfcc, choi, "
        "musicnn, clmr, jukebox, or the name of a features folder",
    )
    p.add_argument("--grid", choices=["paper", "demo"], default="paper", help="which grid")
    p.set_defaults(func=_cmd_grid_config)


def _check_pair(dataset: str, representation: str) -> None:
    """Refuse an unknown dataset or a representation name that cannot be a folder, before any work."""
    from .cache import folder_name
    from .datasets import get_dataset

    get_dataset(dataset)
    folder_name(representation)  # hf:org/model, module:Class: stored under a folder name of their own


def _cmd_grid_config(args) -> int:
    from .probe.grid import named_grid_cfgs, write_grid_configs

    _check_pair(args.dataset, args.representation)
    paths = write_grid_configs(named_grid_cfgs(args.dataset, args.representation, args.grid))
    print(f"grid-config {args.dataset}/{args.representation}: {len(paths)} configs in {paths[0].parent}")
    return 0


def _add_probe(sub):
    p = sub.add_parser(
        "probe",
        help="train probes of a dataset x representation (a whole grid at once)",
        formatter_class=_Formatter,
        description="Train every config of the grid (or of --config files) on\n"
        "representations/<dataset>/<representation>/ and save each run to\n"
        "probes/<dataset>/<representation>/<uid>/. Runs that already have metrics.json are\n"
        "skipped, so an interrupted grid resumes. By default the configs are trained together\n"
        "as stacked tensors; --serial trains them one after another with the original's loop.\n"
        "Non-finite features (NaN/inf) are reported and, by default, replaced: +/-inf by the\n"
        "training split's per-dimension finite max/min, NaN by its finite mean.",
    )
    p.add_argument(
        "dataset",
        help="a benchmark (gtzan_ff, magnatagatune, giantsteps_clips, emomusic), "
        "synthetic, or a dataset you imported",
    )
    p.add_argument(
        "representation",
        help="whose features to probe: the folder representations/<dataset>/<representation>/ of the cache",
    )
    p.add_argument(
        "--grid", choices=["paper", "demo"], default="paper", help="which grid (ignored with --config)"
    )
    p.add_argument(
        "--config", nargs="+", default=None, metavar="FILE", help="config JSON files to train instead"
    )
    p.add_argument("--serial", action="store_true", help="one config at a time (the original's loop)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="arithmetic of the stacked first-layer products: fp32 (the original's) or bf16 "
        "(float32 accumulation, weights and Adam; faster on GPUs and AMX CPUs)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--nonfinite",
        choices=["replace", "error"],
        default="replace",
        help="what to do with NaN/inf features",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="retrain configs that already have a finished run"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _executor_args(p)
    p.set_defaults(func=_cmd_probe)


def _cmd_probe(args) -> int:
    from .probe.config import load_config
    from .probe.grid import named_grid_cfgs
    from .probe.train import train_grid

    _check_pair(args.dataset, args.representation)
    torch_device(args.device)  # a device that is not there: say so before loading anything
    if args.config:
        cfgs = [load_config(path) for path in args.config]
    else:
        cfgs = named_grid_cfgs(args.dataset, args.representation, args.grid)
    summaries = train_grid(
        args.dataset,
        args.representation,
        cfgs,
        serial=args.serial,
        precision=args.precision,
        device=args.device,
        nonfinite=args.nonfinite,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        executor=_executor(args),
    )
    trained = sum(s["status"] == "trained" for s in summaries)
    folder = os.path.dirname(summaries[0]["dir"]) if summaries else "-"
    print(
        f"probe {args.dataset}/{args.representation}: {trained} trained, "
        f"{len(summaries) - trained} already done -> {folder}"
    )
    return 0


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="pick each pair's best probe on validation; print its test metrics as a table",
        formatter_class=_Formatter,
        description="For every dataset x representation with finished runs (or those named), select\n"
        "the run with the best validation metric (ties: smallest uid), evaluate it on --split,\n"
        "print a markdown table (metrics x 100) and optionally write all metrics as JSON.",
    )
    p.add_argument("--dataset", action="append", default=None, help="only this dataset (repeatable)")
    p.add_argument(
        "--representation", action="append", default=None, help="only this representation (repeatable)"
    )
    p.add_argument("--split", choices=["valid", "test"], default="test", help="split to report")
    p.add_argument("--metric", default="primary", help="validation metric that selects the run")
    p.add_argument(
        "--expected-num-runs", type=int, default=None, help="fail unless each pair has this many runs"
    )
    p.add_argument(
        "--nonfinite",
        choices=["replace", "error"],
        default="replace",
        help="what to do with NaN/inf features",
    )
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--out", default=None, help="write the rows as JSON to this file")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .probe.evaluate import evaluate, results_table

    torch_device(args.device)
    rows = evaluate(
        args.dataset,
        args.representation,
        split=args.split,
        metric=args.metric,
        out=args.out,
        expected_num_runs=args.expected_num_runs,
        nonfinite=args.nonfinite,
        device=args.device,
    )
    print(results_table(rows))
    if args.out:
        print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------- report
def _add_report(sub):
    p = sub.add_parser(
        "report",
        help="write an HTML report: results beside the paper's, plots, provenance",
        formatter_class=_Formatter,
        description="Evaluate every dataset x representation with finished probe runs and write\n"
        "index.html (+ PNG figures), summary.md and results.json to --out.",
    )
    p.add_argument("--out", default=None, help="output folder (default: <cache>/report)")
    p.add_argument("--dataset", action="append", default=None, help="only this dataset (repeatable)")
    p.add_argument(
        "--representation", action="append", default=None, help="only this representation (repeatable)"
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .io import read_json
    from .report import comparison_table, side_by_side_table, write_report

    index = write_report(args.out, args.dataset, args.representation)  # evaluates each pair once
    rows = read_json(index.parent / "results.json")["rows"]
    print(comparison_table(rows))
    print()
    print(side_by_side_table(rows))
    print(f"report: {index}")
    return 0


# ---------------------------------------------------------------- demo
def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic key dataset and print the results table",
        formatter_class=_Formatter,
        description="generate a synthetic 24-key dataset -> extract chroma and mfcc -> train a small\n"
        "probe grid -> evaluate on test -> write the report. About 25 s on 2 idle CPU cores.\n"
        "Outputs go to the cache ($JUKEMIR_CACHE_DIR, default ~/.jukemir/cache).",
    )
    p.add_argument("--songs-per-key", type=int, default=6, help="songs per key (>= 3: train, valid and test)")
    p.add_argument("--grid", choices=["demo", "paper"], default="demo", help="probe grid to train")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(
        songs_per_key=args.songs_per_key,
        grid=args.grid,
        report=not args.no_report,
        progress=not args.no_progress,
    )
    return 0


# The subcommands, in pipeline order (as `jukemir --help` lists them).
COMMANDS = (
    _add_demo,
    _add_download,
    _add_process,
    _add_import,
    _add_extract,
    _add_grid_config,
    _add_probe,
    _add_evaluate,
    _add_report,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jukemir",
        formatter_class=_Formatter,
        description="Measure how well music-audio representations transfer to MIR tasks.\n"
        "Stages: download -> process -> extract -> probe -> evaluate -> report.\n"
        "Cache root: $JUKEMIR_CACHE_DIR (default ~/.jukemir/cache).",
    )
    parser.add_argument("--version", action="version", version=f"jukemir {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if threading.current_thread() is threading.main_thread():
        terminate_like_interrupt()  # SIGTERM unwinds like Ctrl-C: locks released, workers stopped
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print(
            f"jukemir {args.command}: terminated (SIGTERM); finished work is kept, run again to resume",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print(
            f"jukemir {args.command}: interrupted; finished work is kept, run again to resume",
            file=sys.stderr,
        )
        return 130
    except JukemirError as exc:
        hint = ""
        if isinstance(exc, DiskFullError):
            hint = "; free some space and run the same command again (finished work is kept)"
        print(f"jukemir {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a file the user named: a bug, keep the traceback
        # the system refused a file the user named (permissions, a missing folder, ...)
        print(
            one_line(f"jukemir {args.command}: error: {exc.filename}: {exc.strerror or exc}"), file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
