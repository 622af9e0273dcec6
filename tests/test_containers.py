"""containers/, docker-compose.yml and reproduce/, without a Docker daemon.

Each image's ENTRYPOINT is run natively (``jukemir`` = this checkout's ``python -m jukemir``)
against temporary folders standing in for /input and /output; the models whose weights are not
available here run with small test weights. The numbered scripts run end to end on the synthetic
dataset; Docker itself is replaced by a stub that records its arguments.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jukemir import cli
from jukemir.cli import build_parser
from jukemir.errors import UserError
from jukemir.representations import DIMS
from tests.conftest import write_tone

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
REPRODUCE = REPO / "reproduce"
REPRESENTATIONS = ["chroma", "mfcc", "choi", "musicnn", "clmr", "jukebox"]
CPU_IMAGES = ["chroma", "mfcc", "choi"]
GPU_IMAGES = ["base", "clmr", "musicnn", "jukebox"]
PUBLIC_BASE = {"cpu": "python:3.11.13-slim-bookworm", "gpu": "nvidia/cuda:13.0.2-base-ubuntu24.04"}


def dockerfile(name: str) -> dict:
    """The instructions of ``containers/<name>.Dockerfile``: {"FROM": [...], "ENTRYPOINT": [...], ...}.

    Continuation lines are joined; exec-form (JSON) ENTRYPOINT/CMD are parsed into lists.
    """
    text = (CONTAINERS / f"{name}.Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    parsed: dict[str, list] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        value = json.loads(rest) if keyword in ("ENTRYPOINT", "CMD") else rest.strip()
        parsed.setdefault(keyword.upper(), []).append(value)
    return parsed


def common_part(name: str) -> str:
    """The text from FROM up to the image's own section marker."""
    text = (CONTAINERS / f"{name}.Dockerfile").read_text()
    return text[text.index("\nFROM ") : text.index(f"# {'-' * 64} {name}\n")]


def native(argv: list[str]) -> list[str]:
    """An image's command run natively: ``jukemir`` is this checkout's ``python -m jukemir``."""
    assert argv[0] == "jukemir", argv
    return [sys.executable, "-m", "jukemir", *argv[1:]]


def run_entrypoint(rep: str, *args, input_dir: Path, output_dir: Path) -> subprocess.CompletedProcess:
    """``docker run IMAGE ARGS`` for ``rep``, natively, with the folders appended.

    The folders override /input, /output.
    """
    command = dockerfile(rep)["ENTRYPOINT"][-1] + [str(input_dir), str(output_dir), *args, "--no-progress"]
    return subprocess.run(native(command), cwd=REPO, capture_output=True, text=True, timeout=120)


def tone_folder(folder: Path, n: int, seconds: float, sr: int = 22050) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        write_tone(folder / f"clip{i}.wav", seconds=seconds, sr=sr, freq=110.0 * (i + 2))
    return folder


def outputs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}


# ---------------------------------------------------------------- the Dockerfiles


@pytest.mark.parametrize("rep", REPRESENTATIONS)
def test_entrypoint_is_the_folder_runner_with_input_output_defaults(rep, tmp_path, monkeypatch):
    parsed = dockerfile(rep)
    entrypoint = parsed["ENTRYPOINT"][-1]
    assert entrypoint == ["jukemir", "extract", rep]
    args = build_parser().parse_args(entrypoint[1:] + ["--batch_size", "256", "--batch_idx", "3"])
    assert (args.batch_size, args.batch_idx) == (256, 3)
    # left out, the folders are the container's /input and /output (here stand-ins), when they exist
    assert (cli.CONTAINER_INPUT, cli.CONTAINER_OUTPUT) == ("/input", "/output")
    folders = (str(tmp_path / "input"), str(tmp_path / "output"))
    monkeypatch.setattr(cli, "CONTAINER_INPUT", folders[0])
    monkeypatch.setattr(cli, "CONTAINER_OUTPUT", folders[1])
    with pytest.raises(UserError, match="no INPUT_DIR given"):
        cli._extract_folders(args)
    for folder in folders:
        os.mkdir(folder)
    assert cli._extract_folders(args) == folders
    assert parsed["USER"][-1] == "1000:1000"  # non-root, numeric
    assert "JUKEMIR_CACHE_DIR=/jukemir/cache" in " ".join(parsed["ENV"])


def test_images_are_pinned_and_share_their_common_layers():
    (torch_version,) = set(re.findall(r"torch==([\d.]+)", (REPO / ".ci" / "run").read_text()))  # CI's torch
    for group in (CPU_IMAGES, GPU_IMAGES):
        first = common_part(group[0])
        for name in group[1:]:
            assert common_part(name) == first, f"{name}.Dockerfile's common part differs from {group[0]}'s"
        assert f"ARG TORCH_VERSION={torch_version}" in first
    assert "+cpu" in common_part("chroma") and "download.pytorch.org/whl/cpu" in common_part("chroma")
    pins = [
        line for line in (CONTAINERS / "constraints.txt").read_text().splitlines() if line and line[0] != "#"
    ]
    assert pins and all(re.fullmatch(r"[\w.-]+==[\w.]+", line) for line in pins)
    base = dockerfile("base")
    assert base["CMD"] == [["bash"]] and "JUKEMIR_IN_DOCKER=1" in base["ENV"]
    assert "ffmpeg" in " ".join(base["RUN"]) and "/src[ray]" in " ".join(base["RUN"])
    # weights baked at build time by the package's own (checksummed) download code
    for rep in ("choi", "clmr", "musicnn"):
        assert f"g('{rep}', device='cpu'" in " ".join(dockerfile(rep)["RUN"])
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!jukemir/" in ignored  # an allow list: the context holds only what is built


def test_dockerfiles_build_offline_with_the_same_arguments():
    """One ARG block in every Dockerfile; BASE_IMAGE's public default; no frontend to pull."""
    blocks = {}
    for name in REPRESENTATIONS + ["base"]:
        text = (CONTAINERS / f"{name}.Dockerfile").read_text()
        assert "# syntax=" not in text  # BuildKit would pull that frontend from a registry
        head = text[: text.index(f"# {'-' * 64} {name}\n")]
        lines = [line for line in head.splitlines() if line and not line.startswith("#")]
        base = re.fullmatch(r"ARG BASE_IMAGE=(\S+)", lines[0])
        assert base and lines[1] == "FROM ${BASE_IMAGE}", lines[:2]
        public = PUBLIC_BASE["cpu" if name in CPU_IMAGES else "gpu"]
        assert base.group(1) == public
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+", public)  # a versioned tag, not latest
        blocks[name] = [line for line in lines[2:] if line.startswith("ARG ")]
    first = blocks["chroma"]
    assert all(block == first for block in blocks.values()), blocks
    # pip's own options pass through as build arguments; no default, so unset (PyPI) unless given
    for option in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        assert f"ARG {option}" in first
    assert "ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu" in first
    assert '--extra-index-url "${TORCH_CPU_INDEX}"' in common_part("chroma")


def test_scripts_are_executable():
    for script in [*CONTAINERS.glob("*.sh"), *REPRODUCE.glob("*.sh"), *(REPO / "tools").glob("*.sh")]:
        if script.name != "common.sh":  # sourced, not run
            assert os.access(script, os.X_OK), f"{script} lacks its executable bit"


# ---------------------------------------------------------------- each ENTRYPOINT, natively


@pytest.mark.parametrize("rep", ["chroma", "mfcc"])
def test_handcrafted_entrypoints_fill_the_output_folder(rep, tmp_path):
    wavs = tone_folder(tmp_path / "input", 4, seconds=1.0)
    out = tmp_path / "output"
    r = run_entrypoint(rep, "--batch_size", "3", "--batch_idx", "1", input_dir=wavs, output_dir=out)
    assert r.returncode == 0, r.stderr
    assert list(outputs(out)) == ["clip3"]  # batch 1 of 3 = the 4th file
    r = run_entrypoint(rep, input_dir=wavs, output_dir=out)
    assert r.returncode == 0, r.stderr
    features = outputs(out)
    assert list(features) == [f"clip{i}" for i in range(4)]
    assert all(
        v.shape == (DIMS[rep],) and v.dtype == np.float32 and np.isfinite(v).all() for v in features.values()
    )
    r = run_entrypoint(rep, "--batch_size", "3", "--batch_idx", "2", input_dir=wavs, output_dir=out)
    assert r.returncode != 0 and "batch index" in r.stderr.lower()


def test_choi_entrypoint_with_the_weights_as_baked(tmp_path, isolated_cache, choi_dir):
    # the image bakes the five official files into <cache>/models/choi; stage the same files there
    models = isolated_cache / "models" / "choi"
    models.mkdir(parents=True)
    for path in sorted(choi_dir.glob("*.hdf5")):
        shutil.copy(path, models)
    wavs = tone_folder(tmp_path / "input", 3, seconds=2.0)
    r = run_entrypoint("choi", "--device", "cpu", input_dir=wavs, output_dir=tmp_path / "output")
    assert r.returncode == 0, r.stderr
    features = outputs(tmp_path / "output")
    assert len(features) == 3 and all(v.shape == (160,) and np.isfinite(v).all() for v in features.values())


def test_musicnn_entrypoint_with_the_small_official_model(tmp_path, isolated_cache, musicnn_dir):
    # MSD_musicnn_big's data file is not needed: the small MSD_musicnn (same code path: official
    # checksummed files in <cache>/models/musicnn, converted once) stands in for it
    shutil.copytree(musicnn_dir / "MSD_musicnn", isolated_cache / "models" / "musicnn" / "MSD_musicnn")
    wavs = tone_folder(tmp_path / "input", 2, seconds=3.5, sr=16000)
    r = run_entrypoint(
        "musicnn", "--model", "MSD_musicnn", "--device", "cpu", input_dir=wavs, output_dir=tmp_path / "output"
    )
    assert r.returncode == 0, r.stderr
    features = outputs(tmp_path / "output")
    assert len(features) == 2 and all(v.shape == (1506,) for v in features.values())


def test_clmr_entrypoint_with_random_weights(tmp_path):
    from jukemir.representations.clmr import SampleCNN

    torch.manual_seed(0)
    weights = tmp_path / "clmr.pt"
    torch.save({f"encoder.{k}": v for k, v in SampleCNN().state_dict().items()}, weights)
    wavs = tone_folder(tmp_path / "input", 2, seconds=3.0)
    r = run_entrypoint(
        "clmr", "--weights", str(weights), "--device", "cpu", input_dir=wavs, output_dir=tmp_path / "output"
    )
    assert r.returncode == 0, r.stderr
    features = outputs(tmp_path / "output")
    assert len(features) == 2 and all(v.shape == (512,) and np.isfinite(v).all() for v in features.values())


def test_jukebox_entrypoint_with_a_tiny_model(tmp_path):
    from tests.test_jukebox import TINY, write_checkpoints

    weights = write_checkpoints(tmp_path / "weights")  # official-format files of an 8-block model
    wavs = tone_folder(tmp_path / "input", 2, seconds=0.5, sr=44100)
    r = run_entrypoint(
        "jukebox",
        "--weights",
        str(weights),
        "--model",
        "checkpoint",
        "--layers",
        "3",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        input_dir=wavs,
        output_dir=tmp_path / "output",
    )
    assert r.returncode == 0, r.stderr
    features = outputs(tmp_path / "output")
    assert len(features) == 2 and all(v.shape == (TINY["prior_width"],) for v in features.values())


# ---------------------------------------------------------------- docker-compose.yml


def test_compose_services():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "profiles" not in services["base"]  # `docker compose up` starts only the base service
    assert services["base"]["build"]["dockerfile"] == "containers/base.Dockerfile"
    for rep in REPRESENTATIONS:
        service = services[rep]
        assert service["build"]["dockerfile"] == f"containers/{rep}.Dockerfile"
        assert service["image"].endswith(f"/representations_{rep}:${{JUKEMIR_TAG:-latest}}")
        assert rep in service["profiles"]
        mounts = [re.fullmatch(r"(.+):(/[\w/]+)(:ro)?", v).groups() for v in service["volumes"]]
        assert mounts[0] == (
            "${JUKEMIR_CACHE_DIR:-~/.jukemir/cache}/processed/${DATASET:-gtzan_ff}/wav",
            "/input",
            ":ro",
        )
        assert mounts[1] == (
            f"${{JUKEMIR_CACHE_DIR:-~/.jukemir/cache}}/representations/${{DATASET:-gtzan_ff}}/{rep}",
            "/output",
            None,
        )
        gpu = "deploy" in service
        assert gpu == (rep in ("musicnn", "clmr", "jukebox"))
        if gpu:
            assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


# ---------------------------------------------------------------- reproduce/


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """A PATH folder with ``jukemir`` (this checkout) and a ``docker`` stub that logs its arguments."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "jukemir").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m jukemir "$@"\n')
    (folder / "docker").write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$DOCKER_LOG"\n')
    for tool in folder.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DOCKER_LOG", str(tmp_path / "docker.log"))
    monkeypatch.delenv("JUKEMIR_IN_DOCKER", raising=False)
    monkeypatch.delenv("JUKEMIR_DOCKER", raising=False)
    return folder


def script(name: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    program = [sys.executable] if name.endswith(".py") else [shutil.which("bash")]
    return subprocess.run(
        [*program, str(REPRODUCE / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def docker_calls(tmp_path) -> list[str]:
    log = tmp_path / "docker.log"
    return log.read_text().splitlines() if log.exists() else []


def test_extract_prints_the_papers_822_commands(bin_dir, isolated_cache):
    r = script("3_extract.py")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 822  # 4 + 28 + 102 + 3 batches of 256, times six representations
    jukebox = [line for line in lines if "representations_jukebox" in line]
    assert len(jukebox) == 137
    mtt = [line for line in jukebox if f"-v {isolated_cache}/processed/magnatagatune/wav:/input:ro" in line]
    assert len(mtt) == 102 and mtt[-1].endswith("--batch_size 256 --batch_idx 101 --precision fp32")
    assert f"-v {isolated_cache}/representations/magnatagatune/jukebox:/output" in mtt[0]
    assert "--gpus all" in jukebox[0] and not any(
        "--gpus" in line for line in lines if "representations_mfcc" in line
    )
    assert f"--user {os.getuid()}:{os.getgid()}" in lines[0] and lines[0].startswith("mkdir -p ")
    # sizes come from meta.json when there is one: 5 items with a split -> one batch of 4 and one of 1
    meta = {f"u{i}": {"split": "train" if i < 5 else None, "y": 0} for i in range(7)}
    (isolated_cache / "processed" / "gtzan_ff").mkdir(parents=True)
    (isolated_cache / "processed" / "gtzan_ff" / "meta.json").write_text(json.dumps(meta))
    r = script("3_extract.py", "--datasets", "gtzan_ff", "--representations", "choi", "--batch-size", "4")
    assert [line.rsplit(" ", 1)[-1] for line in r.stdout.splitlines()] == ["0", "1"]


def test_extract_sh_runs_docker_per_batch(bin_dir, isolated_cache, tmp_path):
    r = script("3_extract.sh", env={"DATASETS": "emomusic", "REPRESENTATIONS": "clmr"})
    assert r.returncode == 0, r.stderr
    calls = docker_calls(tmp_path)
    assert len(calls) == 3 and all(
        c.startswith("run --rm --user") and "representations_clmr:latest" in c for c in calls
    )
    assert (isolated_cache / "representations" / "emomusic" / "clmr").is_dir()  # created before the mount


def test_docker_switch_reruns_the_script_in_the_container(bin_dir, tmp_path):
    r = script("4_grid_config.sh", env={"JUKEMIR_DOCKER": "1", "JUKEMIR_CONTAINER": "lib1", "GRID": "demo"})
    assert r.returncode == 0, r.stderr
    (call,) = docker_calls(tmp_path)
    assert call.startswith("exec -i -e DATASETS -e REPRESENTATIONS -e GRID")
    assert call.endswith("lib1 bash reproduce/4_grid_config.sh")


@pytest.mark.parametrize("gpu", [True, False])
def test_docker_0_starts_the_base_container(bin_dir, tmp_path, isolated_cache, gpu):
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stub'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    system = tmp_path / "system"  # only the tools the script needs, so no real nvidia-smi is found
    system.mkdir()
    for tool in ("id", "mkdir", "dirname"):
        (system / tool).symlink_to(shutil.which(tool))
    r = script("0_docker.sh", env={"PATH": f"{bin_dir}{os.pathsep}{system}"})
    assert r.returncode == 0, r.stderr
    ps, run = docker_calls(tmp_path)
    assert ps.startswith("ps ")
    assert run.startswith("run --detach") and run.endswith("jukemir/lib:latest bash")
    assert ("--gpus all" in run) == gpu
    assert f"--user {os.getuid()}:{os.getgid()}" in run
    assert (
        f"--volume {isolated_cache}:/jukemir/cache" in run
        and f"--volume {REPRODUCE}:/jukemir/reproduce:ro" in run
    )


def test_scripts_loop_over_the_chosen_datasets_and_representations(bin_dir, tmp_path, isolated_cache):
    log = tmp_path / "jukemir.log"
    (bin_dir / "jukemir").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')  # records, runs nothing
    env = {"DATASETS": "gtzan_ff emomusic", "REPRESENTATIONS": "chroma jukebox", "JOBS": "3", "VERIFY": "1"}

    def calls(name, *args, **extra):
        log.unlink(missing_ok=True)
        r = script(name, *args, env={**env, **extra})
        assert r.returncode == 0, r.stderr
        return log.read_text().splitlines()

    assert calls("1_download.sh", "--mirror", "M") == [
        "download gtzan_ff --jobs 3 --mirror M",
        "download emomusic --jobs 3 --mirror M",
    ]
    assert calls("2_process.sh")[:2] == [
        "process gtzan_ff --verify-metadata --jobs 3",
        "process gtzan_ff --jobs 3",
    ]
    assert calls("123_precomputed.sh") == [
        "download precomputed gtzan_ff chroma",
        "download precomputed gtzan_ff jukebox",
        "download precomputed emomusic chroma",
        "download precomputed emomusic jukebox",
        "download metadata",
    ]
    assert calls("4_grid_config.sh")[-1] == "grid-config emomusic jukebox --grid paper"
    r = script("5_grid_train_serial.sh", env=env)
    assert r.returncode == 1 and "run 4_grid_config.sh first" in r.stderr
    for dataset in env["DATASETS"].split():
        for rep in env["REPRESENTATIONS"].split():
            (isolated_cache / "probes" / dataset / rep).mkdir(parents=True)
            (isolated_cache / "probes" / dataset / rep / "abc.json").write_text("{}")
    ray = calls("5_grid_train_ray.sh", RAY_ADDRESS="auto")
    assert (
        ray[0] == f"probe gtzan_ff chroma --config {isolated_cache}/probes/gtzan_ff/chroma/abc.json "
        "--executor ray --address auto"
    )
    assert len(ray) == 4


@pytest.mark.slow
def test_reproduce_end_to_end_locally_on_the_synthetic_dataset(bin_dir, isolated_cache, monkeypatch):
    """3_extract.py --local -> 4_grid_config.sh -> 5_grid_train_serial.sh -> 6_evaluate.sh, natively."""
    from jukemir.datasets import synthetic

    synthetic.generate(songs_per_key=3, clips_per_song=1, clip_seconds=1.0, progress=False)
    results = isolated_cache / "results"
    env = {
        "DATASETS": "synthetic",
        "REPRESENTATIONS": "chroma mfcc",
        "GRID": "demo",
        "RESULTS_DIR": str(results),
        "OMP_NUM_THREADS": "1",
    }

    r = script(
        "3_extract.py",
        "--local",
        "--datasets",
        "synthetic",
        "--representations",
        "chroma",
        "mfcc",
        "--",
        "--no-progress",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    wavs = sorted(p.stem for p in (isolated_cache / "processed" / "synthetic" / "wav").glob("*.wav"))
    assert len(wavs) == 24 * 3
    for rep in ("chroma", "mfcc"):
        feats = isolated_cache / "representations" / "synthetic" / rep
        assert sorted(p.stem for p in feats.glob("*.npy")) == wavs
        assert np.load(feats / f"{wavs[0]}.npy").shape == (DIMS[rep],)

    r = script("4_grid_config.sh", env=env)
    assert r.returncode == 0, r.stderr
    configs = {
        rep: sorted((isolated_cache / "probes" / "synthetic" / rep).glob("*.json"))
        for rep in ("chroma", "mfcc")
    }
    assert [len(c) for c in configs.values()] == [12, 12]

    r = script("5_grid_train_serial.sh", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    for _rep, cfgs in configs.items():
        for cfg in cfgs:
            assert (cfg.with_suffix("") / "metrics.json").is_file(), cfg

    r = script("6_evaluate.sh", env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads((results / "results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert sorted((row["dataset"], row["representation"]) for row in rows) == [
        ("synthetic", "chroma"),
        ("synthetic", "mfcc"),
    ]
    for row in rows:
        assert 0.0 <= row["test"]["score"] <= 1.0, row  # the key task's primary metric, on test
    assert "chroma" in r.stdout and "mfcc" in r.stdout  # the printed table
    report = results / "report"
    assert (report / "index.html").is_file() and (report / "summary.md").is_file()
    assert "synthetic" in (report / "summary.md").read_text()
