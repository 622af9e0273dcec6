"""Jukebox: official-format checkpoints of small random models, loading, truncation, numerics, the CLI.

The checkpoints are written here from the official parameter names (spelled
out below, independently of the package's modules) with ``torch.save`` in the
legacy format torch 1.4 used, ``{"hps": Hyperparams, "model": state_dict}``.
The reference computations at the end re-derive a few layers from the saved
weights with plain dense masked attention.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jukemir.assets import DownloadError, file_checksum
from jukemir.representations import get_representation
from jukemir.representations.jukebox import Jukebox
from jukemir.representations.jukebox import weights as W
from jukemir.representations.jukebox.hps import PriorHps, resolve_hps

SR = 44100
# A small member of the family: hop 128 (downs 3, 2, 2), 64 tokens = 8 rows of 8, width 32, 8 blocks.
TINY = dict(
    levels=3,
    downs_t=(3, 2, 2),
    strides_t=(2, 2, 2),
    emb_width=16,
    l_bins=64,
    width=8,
    depth=2,
    m_conv=1.0,
    dilation_growth_rate=3,
    hvqvae_multipliers=(2, 1, 1),
    sr=SR,
    level=2,
    n_ctx=64,
    prior_width=32,
    prior_depth=8,
    heads=2,
    attn_order=2,
    blocks=8,
    m_attn=0.25,
    m_mlp=1.0,
    y_bins=(5, 7),
    t_bins=1024,
    max_bow_genre_size=5,
    min_duration=60.0,
    max_duration=600.0,
    fp16_params=True,
)
HOP, N_CTX, WIDTH, DEPTH, BLOCK_CTX = 128, 64, 32, 8, 8
MIN_SAMPLES = N_CTX * HOP


# ---------------------------------------------------------------- official-format checkpoints


def official_vqvae_shapes(h: dict) -> dict[str, tuple]:
    """Every key of the official VQ-VAE state dict for hps ``h`` (decoders abbreviated: they are dropped)."""
    shapes, emb = {}, h["emb_width"]
    for level in range(h["levels"]):
        width, depth = (
            h["width"] * h["hvqvae_multipliers"][level],
            h["depth"] * h["hvqvae_multipliers"][level],
        )
        for i in range(level + 1):
            s, prefix = h["strides_t"][i], f"encoders.{level}.level_blocks.{i}.model"
            for j in range(h["downs_t"][i]):
                shapes[f"{prefix}.{j}.0.weight"] = (width, (1 if i == 0 else emb) if j == 0 else width, 2 * s)
                shapes[f"{prefix}.{j}.0.bias"] = (width,)
                for r in range(depth):
                    unit = f"{prefix}.{j}.1.model.{r}.model"
                    shapes[f"{unit}.1.weight"], shapes[f"{unit}.1.bias"] = (width, width, 3), (width,)
                    shapes[f"{unit}.3.weight"], shapes[f"{unit}.3.bias"] = (width, width, 1), (width,)
            shapes[f"{prefix}.{h['downs_t'][i]}.weight"] = (emb, width, 3)
            shapes[f"{prefix}.{h['downs_t'][i]}.bias"] = (emb,)
        shapes[f"decoders.{level}.level_blocks.0.model.0.weight"] = (width, emb, 3)
        shapes[f"decoders.{level}.out.weight"] = (1, emb, 3)
        shapes[f"bottleneck.level_blocks.{level}.k"] = (h["l_bins"], emb)
    return shapes


def official_prior_shapes(h: dict) -> dict[str, tuple]:
    w, s, m = h["prior_width"], int(h["m_attn"] * h["prior_width"]), int(h["m_mlp"] * h["prior_width"])
    shapes = {
        "y_emb.bow_genre_emb.emb.weight": (h["y_bins"][0], w),
        "y_emb.artist_emb.emb.weight": (h["y_bins"][1], w),
        "y_emb.total_length_emb.emb.weight": (h["t_bins"], w),
        "y_emb.absolute_pos_emb.emb.weight": (h["t_bins"], w),
        "y_emb.relative_pos_emb.emb.weight": (h["t_bins"], w),
        "prior.x_emb.weight": (h["l_bins"], w),
        "prior.pos_emb.pos_emb": (h["n_ctx"], w),
    }
    for d in range(h["prior_depth"]):
        b = f"prior.transformer._attn_mods.{d}"
        shapes.update(
            {
                f"{b}.attn.c_attn.w": (w, 3 * s),
                f"{b}.attn.c_attn.b": (3 * s,),
                f"{b}.attn.c_proj.w": (s, w),
                f"{b}.attn.c_proj.b": (w,),
                f"{b}.ln_0.weight": (w,),
                f"{b}.ln_0.bias": (w,),
                f"{b}.mlp.c_fc.w": (w, m),
                f"{b}.mlp.c_fc.b": (m,),
                f"{b}.mlp.c_proj.w": (m, w),
                f"{b}.mlp.c_proj.b": (w,),
                f"{b}.ln_1.weight": (w,),
                f"{b}.ln_1.bias": (w,),
            }
        )
    shapes["prior.x_out.weight"] = (h["l_bins"], w)
    return shapes


def random_weights(shapes: dict, seed: int) -> OrderedDict:
    """Role-scaled random values; Conv1D weights stored in float16 as the 5B checkpoint (fp16_params)."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, shape in shapes.items():
        x = torch.randn(shape, generator=gen)
        if name.endswith(".w"):
            out[name] = (x / math.sqrt(shape[0])).half()
        elif name.endswith(".k"):
            out[name] = x
        elif len(shape) == 3:
            out[name] = x / math.sqrt(shape[1] * shape[2])
        elif ".ln_" in name and name.endswith("weight"):
            out[name] = 1 + 0.1 * x
        else:
            out[name] = 0.1 * x
    return out


def save_official(path: Path, state: dict, hps: dict, zip_format: bool = False) -> None:
    """``torch.save({"hps": Hyperparams(...), "model": ...})`` as torch 1.4 did (legacy format)."""
    with _FakeJukeboxModules() as Hyperparams:
        # with training-time extras the loader must ignore, one a numpy scalar as make_vqvae stores
        hps = Hyperparams(hps, sample_length=np.int64(1048576), restore_prior="", lr=3e-4)
        torch.save({"hps": hps, "model": state, "step": 0}, path, _use_new_zipfile_serialization=zip_format)


class _FakeJukeboxModules:
    """Installs a stand-in ``jukebox.hparams.Hyperparams`` so pickles reference the official class."""

    def __enter__(self):
        self.saved = {k: sys.modules.get(k) for k in ("jukebox", "jukebox.hparams")}
        package, module = types.ModuleType("jukebox"), types.ModuleType("jukebox.hparams")

        class Hyperparams(dict):
            pass

        Hyperparams.__module__, Hyperparams.__qualname__ = "jukebox.hparams", "Hyperparams"
        module.Hyperparams, package.hparams = Hyperparams, module
        sys.modules.update({"jukebox": package, "jukebox.hparams": module})
        return Hyperparams

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_checkpoints(folder: Path, hps: dict = TINY, seed: int = 0, zip_format: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    states = {
        "vqvae.pth.tar": random_weights(official_vqvae_shapes(hps), seed),
        "prior_level_2.pth.tar": random_weights(official_prior_shapes(hps), seed + 1),
    }
    for name, state in states.items():
        save_official(folder / name, state, hps, zip_format)
    return folder


def load_official(path: Path) -> dict:
    """The saved state dict via ``torch.load`` (which needs the ``jukebox`` package to unpickle the hps)."""
    with _FakeJukeboxModules():
        return torch.load(path, weights_only=False)["model"]


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return write_checkpoints(tmp_path_factory.mktemp("jukebox") / "official")


def tiny_rep(weights, **kwargs) -> Jukebox:
    kwargs.setdefault("precision", "fp32")
    kwargs.setdefault("model", "checkpoint")
    kwargs.setdefault("layers", [3])
    return Jukebox(device="cpu", weights=str(weights), **kwargs)


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    x = rng.randn(int(seconds * SR)).astype(np.float32)
    return x / np.abs(x).max()


# ---------------------------------------------------------------- loading and truncation


def test_official_checkpoints_load_into_the_models(ckpt_dir):
    rep = tiny_rep(ckpt_dir, layers=[3])
    saved = load_official(ckpt_dir / "prior_level_2.pth.tar")
    block = rep.prior.prior.transformer._attn_mods[2]
    assert block.attn.c_attn.w.dtype == torch.float16  # fp32 mode keeps the stored fp16 weights
    assert torch.equal(block.attn.c_attn.w, saved["prior.transformer._attn_mods.2.attn.c_attn.w"])
    assert torch.equal(block.ln_1.bias, saved["prior.transformer._attn_mods.2.ln_1.bias"])
    assert torch.equal(
        rep.prior.y_emb.relative_pos_emb.emb.weight, saved["y_emb.relative_pos_emb.emb.weight"]
    )
    assert len(rep.prior.prior.transformer._attn_mods) == 3
    vq = load_official(ckpt_dir / "vqvae.pth.tar")
    enc = rep.vqvae.encoders["2"].level_blocks[1].model[0][1].model[1].model[3]
    assert torch.equal(enc.weight, vq["encoders.2.level_blocks.1.model.0.1.model.1.model.3.weight"])
    assert torch.equal(rep.vqvae.bottleneck.level_blocks["2"].k, vq["bottleneck.level_blocks.2.k"])
    assert rep.output_shape == (WIDTH,) and rep.min_samples == MIN_SAMPLES


def test_conversion_happens_once_and_deeper_files_are_reused(ckpt_dir, isolated_cache, capsys):
    tiny_rep(ckpt_dir, layers=[5])
    assert capsys.readouterr().err.count("converting") == 2
    converted = sorted(
        p.name for p in (isolated_cache / "models" / "jukebox" / "converted").rglob("*.safetensors")
    )
    assert converted == ["prior_level_2.blocks5.safetensors", "vqvae.safetensors"]
    tiny_rep(ckpt_dir, layers=[2, 4])  # a shallower request reads the 5-block file
    assert "converting" not in capsys.readouterr().err


def test_truncation_drops_exactly_the_right_keys(ckpt_dir, tmp_path):
    expected = official_prior_shapes(TINY)
    keep = {
        k: v
        for k, v in expected.items()
        if k != "prior.x_out.weight"
        and not any(k.startswith(f"prior.transformer._attn_mods.{d}.") for d in range(3, DEPTH))
    }
    report = W.convert(
        ckpt_dir / "prior_level_2.pth.tar", tmp_path / "p.safetensors", W.prior_key_filter(3), keep, {}
    )
    assert sorted(report.dropped) == sorted(set(expected) - set(keep))
    assert report.kept == len(keep) == 7 + 3 * 12
    kept_bytes = sum(int(np.prod(shape)) * (2 if k.endswith(".w") else 4) for k, shape in keep.items())
    assert report.bytes_read == kept_bytes  # the dropped blocks' bytes are skipped, not read
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "p.safetensors")) == set(keep)

    vq_shapes = official_vqvae_shapes(TINY)
    vq_keep = {
        k: v for k, v in vq_shapes.items() if k.startswith(("encoders.2.", "bottleneck.level_blocks.2."))
    }
    vq_report = W.convert(
        ckpt_dir / "vqvae.pth.tar", tmp_path / "v.safetensors", W.vqvae_key_filter(2), vq_keep, {}
    )
    assert sorted(vq_report.dropped) == sorted(set(vq_shapes) - set(vq_keep))
    assert any(k.startswith("decoders.") for k in vq_report.dropped)


def test_mismatched_checkpoints_are_refused(tmp_path):
    bad = dict(official_prior_shapes(TINY))
    bad["prior.transformer._attn_mods.0.attn.extra"] = (3,)
    del bad["prior.transformer._attn_mods.1.ln_0.bias"]
    bad["prior.x_emb.weight"] = (65, WIDTH)
    folder = tmp_path / "bad"
    folder.mkdir()
    save_official(folder / "prior_level_2.pth.tar", random_weights(bad, 1), TINY)
    save_official(folder / "vqvae.pth.tar", random_weights(official_vqvae_shapes(TINY), 0), TINY)
    with pytest.raises(ValueError) as err:
        tiny_rep(folder, layers=[8])
    message = str(err.value)
    assert "1 missing (prior.transformer._attn_mods.1.ln_0.bias)" in message
    assert "1 unexpected (prior.transformer._attn_mods.0.attn.extra)" in message
    assert "prior.x_emb.weight has shape (65, 32)" in message


def test_broken_files_are_named_with_the_reason(ckpt_dir, tmp_path):
    data = (ckpt_dir / "prior_level_2.pth.tar").read_bytes()
    (tmp_path / "cut.pth.tar").write_bytes(data[:-10])
    with pytest.raises(ValueError, match=r"cut.pth.tar: not a readable torch checkpoint .*truncated"):
        W.CheckpointIndex(tmp_path / "cut.pth.tar")
    (tmp_path / "text.pth.tar").write_text("hello")
    with pytest.raises(ValueError, match=r"text.pth.tar: not a readable torch checkpoint"):
        W.CheckpointIndex(tmp_path / "text.pth.tar")


def test_random_bytes_are_a_clear_error_never_a_crash(tmp_path):
    """Files of random bytes (some behind a pickle header) are refused with one line, never MemoryError."""
    rng = np.random.default_rng(0)
    path = tmp_path / "vqvae.pth.tar"
    for i in range(60):
        data = rng.bytes(int(rng.integers(1, 20_000)))
        if i % 3 == 1:
            data = b"\x80\x02" + data  # past the first byte: the unpickler reads on
        if i % 3 == 2:  # the legacy format's first pickle (its magic number), then garbage
            data = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19." + b"\x80\x02" + data
        path.write_bytes(data)
        with pytest.raises(
            ValueError, match=r"vqvae.pth.tar: (not a readable torch checkpoint|expected a dict)"
        ):
            W.CheckpointIndex(path)


def test_zip_format_reads_the_same(ckpt_dir, tmp_path):
    folder = write_checkpoints(tmp_path / "zip", zip_format=True)
    with (
        W.CheckpointIndex(folder / "prior_level_2.pth.tar") as z,
        W.CheckpointIndex(ckpt_dir / "prior_level_2.pth.tar") as leg,
    ):
        assert (z.format, leg.format) == ("zip", "legacy")
        assert z.hps["prior_width"] == WIDTH and leg.hps["sample_length"] == 1048576
        for name in ("prior.pos_emb.pos_emb", "prior.transformer._attn_mods.4.mlp.c_fc.w"):
            assert torch.equal(z.tensor(name), leg.tensor(name))


def test_checkpoints_saved_from_cuda_tensors_read(ckpt_dir, tmp_path):
    """The official files were saved from GPU models: torch.cuda.*Storage classes, location 'cuda:0'."""
    data = (ckpt_dir / "prior_level_2.pth.tar").read_bytes()
    for dtype in (b"HalfStorage", b"FloatStorage"):
        data = data.replace(b"ctorch\n" + dtype + b"\n", b"ctorch.cuda\n" + dtype + b"\n")
    data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    assert data.count(b"ctorch.cuda\nHalfStorage") == 1 and b"cuda:0" in data
    (tmp_path / "cuda.pth.tar").write_bytes(data)
    with (
        W.CheckpointIndex(tmp_path / "cuda.pth.tar") as cuda,
        W.CheckpointIndex(ckpt_dir / "prior_level_2.pth.tar") as cpu,
    ):
        assert cuda.tensors.keys() == cpu.tensors.keys()
        for name in ("prior.transformer._attn_mods.7.attn.c_proj.w", "y_emb.artist_emb.emb.weight"):
            assert torch.equal(cuda.tensor(name), cpu.tensor(name))


def test_hps_by_official_names(ckpt_dir):
    vq, prior = resolve_hps("5b")
    assert (vq.hop_length, vq.l_bins, prior.prior_width, prior.attn_state, prior.block_ctx) == (
        128,
        2048,
        4800,
        1200,
        64,
    )
    vq, prior = resolve_hps("5b", {"prior_width": 64, "n_ctx": 128, "blocks": 16, "downs_t": (1, 1, 1)})
    assert (prior.prior_width, prior.block_ctx, vq.hop_length) == (64, 8, 8)
    with pytest.raises(ValueError, match="unknown jukebox hyper-parameter.*bogus"):
        resolve_hps("5b", {"bogus": 1})
    with pytest.raises(ValueError, match="lyrics"):
        resolve_hps("5b_lyrics")
    with pytest.raises(ValueError, match="multiple of blocks"):
        resolve_hps("5b", {"n_ctx": 100})
    # the same tiny model from overrides of the named config as from the stored hps
    a = tiny_rep(ckpt_dir, layers=[2])
    b = Jukebox(
        device="cpu", precision="fp32", layers=[2], weights=str(ckpt_dir), hps={k: v for k, v in TINY.items()}
    )
    x = clip(0.3)
    np.testing.assert_array_equal(a(x), b(x))


def test_layers_beyond_the_model_are_refused(ckpt_dir):
    with pytest.raises(ValueError, match="exceed the prior's 8 blocks"):
        tiny_rep(ckpt_dir, layers=[9])
    with pytest.raises(ValueError, match="distinct"):
        tiny_rep(ckpt_dir, layers=[2, 2])


def test_official_download_trust_on_first_use(ckpt_dir, tmp_path, monkeypatch, isolated_cache):
    mirror = tmp_path / "mirror"
    remote = mirror / "models" / "jukebox" / "5b"
    remote.mkdir(parents=True)
    for name in ("vqvae.pth.tar", "prior_level_2.pth.tar"):
        (remote / name).write_bytes((ckpt_dir / name).read_bytes())
    monkeypatch.setattr(W, "OFFICIAL_URLS", ())
    monkeypatch.setattr(W, "PRIOR_5B_SIZE", (ckpt_dir / "prior_level_2.pth.tar").stat().st_size + 1)
    with pytest.raises(ValueError, match="expected .* moved aside"):
        W.retrieve_official("5b", mirror=str(mirror))
    monkeypatch.setattr(W, "PRIOR_5B_SIZE", (ckpt_dir / "prior_level_2.pth.tar").stat().st_size)
    rep = Jukebox(device="cpu", precision="fp32", model="checkpoint", layers=[2], mirror=str(mirror))
    record = json.loads((isolated_cache / "models/jukebox/5b/sha256.json").read_text())
    assert record["models/jukebox/5b/vqvae.pth.tar"]["sha256"] == file_checksum(ckpt_dir / "vqvae.pth.tar")
    assert rep.weights_id["prior"]["source_sha256"] == file_checksum(ckpt_dir / "prior_level_2.pth.tar")
    # the compact files suffice once converted, even without the sources
    for name in ("vqvae.pth.tar", "prior_level_2.pth.tar"):
        (isolated_cache / "models/jukebox/5b" / name).unlink()
    again = Jukebox(
        device="cpu", precision="fp32", model="checkpoint", layers=[2], mirror=str(mirror / "nowhere")
    )
    np.testing.assert_array_equal(rep(clip(0.3)), again(clip(0.3)))
    # a later download that differs from the recorded sha256 is refused
    (remote / "vqvae.pth.tar").write_bytes(b"tampered" + (ckpt_dir / "vqvae.pth.tar").read_bytes())
    with pytest.raises(DownloadError, match="checksum"):
        W.retrieve_official("5b", mirror=str(mirror))


# ---------------------------------------------------------------- numerics


def test_fp32_and_reduced_precision_agree(ckpt_dir):
    """Stated tolerance (relative L2 error of the features vs fp32): bf16 < 2e-2, fp16 < 2e-3, tf32 < 2e-3,
    with or without the folded MLP (fuse_mlp)."""
    clips = [clip(0.3, s) for s in range(3)]
    modes = [
        ("bf16", False, 2e-2),
        ("fp16", False, 2e-3),
        ("bf16", True, 2e-2),
        ("fp16", True, 2e-3),
        ("tf32", False, 2e-3),
    ]
    for pool in ("mean", "none"):
        ref = np.stack(tiny_rep(ckpt_dir, layers=[8], pool=pool).batch(clips))
        for precision, fuse, tol in modes:
            rep = tiny_rep(ckpt_dir, layers=[8], pool=pool, precision=precision, fuse_mlp=fuse)
            out = np.stack(rep.batch(clips))
            rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
            assert rel < tol, (pool, precision, fuse, rel)
            if precision == "tf32":  # TF32 is a CUDA setting: on a CPU the products stay float32
                np.testing.assert_array_equal(out, ref)


def test_speed_switches(ckpt_dir):
    """fuse_mlp: silu on rescaled weights, recorded in the provenance; refused where it would change fp32."""
    plain = tiny_rep(ckpt_dir, precision="bf16")
    fused = tiny_rep(ckpt_dir, precision="bf16", fuse_mlp=True)
    assert "fuse_mlp" not in plain.options() and fused.options()["fuse_mlp"] is True
    block, ref = (
        fused.prior.prior.transformer._attn_mods[0].mlp,
        plain.prior.prior.transformer._attn_mods[0].mlp,
    )
    assert block.folded and not ref.folded
    x = torch.randn(5, WIDTH, dtype=torch.bfloat16)
    np.testing.assert_allclose(block(x).float(), ref(x).float(), rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="fuse_mlp"):
        tiny_rep(ckpt_dir, precision="fp32", fuse_mlp=True)
    with pytest.raises(ValueError, match="tf32"):
        tiny_rep(ckpt_dir, precision="tf64")


@pytest.mark.slow
def test_torch_compile_matches_eager(ckpt_dir):
    """The compiled blocks compute the same features.

    fp32: to float32 rounding; bf16: within bf16's tolerance.
    """
    clips = [clip(0.3, s) for s in range(2)]
    for precision, tol in (("fp32", 1e-4), ("bf16", 2e-2)):
        eager = np.stack(tiny_rep(ckpt_dir, layers=[8], precision=precision).batch(clips))
        rep = tiny_rep(ckpt_dir, layers=[8], precision=precision, torch_compile=True)
        out = np.stack(rep.batch(clips))
        assert rep.options()["torch_compile"] is True
        assert np.linalg.norm(out - eager) / np.linalg.norm(eager) < tol, precision


def test_outputs_do_not_depend_on_batch_composition(ckpt_dir):
    clips = [
        clip(0.3, 0),
        clip(0.2, 1),
        clip(0.25, 2),
        clip(0.1, 3),
        clip(0.3, 4),
    ]  # one short, lengths differ
    alone = tiny_rep(ckpt_dir, layers=[1, 3], allow_short=True, batch_size=1)
    together = tiny_rep(ckpt_dir, layers=[1, 3], allow_short=True, batch_size=4)
    singles = [alone(c) for c in clips]
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [3, 0]):
        batch = together.batch([clips[i] for i in order])
        for i, out in zip(order, batch):
            np.testing.assert_allclose(out, singles[i], rtol=1e-5, atol=1e-5)


def test_short_clip_error_and_allow_short(ckpt_dir):
    short = clip((MIN_SAMPLES - 1) / SR)
    rep = tiny_rep(ckpt_dir, layers=[3])
    with pytest.raises(
        ValueError, match=r"audio too short: 8191 samples .* 63 of the 64 tokens .*--allow-short"
    ):
        rep(short)
    assert rep(clip(MIN_SAMPLES / SR)).shape == (WIDTH,)
    full = tiny_rep(ckpt_dir, layers=[3], pool="none", allow_short=True)
    tokens = full.encode([clip(0.3)])[0]
    whole = full._embed([tokens])[0]
    for n in (63, 20, 8, 1):  # causal: a shorter input gives the first positions of the whole
        np.testing.assert_allclose(full._embed([tokens[:n]])[0], whole[:n], rtol=1e-5, atol=1e-5)
    assert full(short).shape == (63, WIDTH)
    with pytest.raises(ValueError, match="no VQ-VAE token"):
        full(clip(100 / SR))


def test_output_shapes(ckpt_dir):
    x = clip(0.3)
    assert tiny_rep(ckpt_dir, layers=[3, 1]).output_shape == (2, WIDTH)
    none = tiny_rep(ckpt_dir, layers=[3, 1], pool="none")
    assert none.output_shape == (2, None, WIDTH)
    out = none(x)
    assert out.shape == (2, N_CTX, WIDTH) and out.dtype == np.float32
    single = tiny_rep(ckpt_dir, layers=[1])(x)
    np.testing.assert_allclose(
        single, out[1].mean(axis=0), rtol=1e-5, atol=1e-6
    )  # stacked in the order asked


def test_load_crops_to_25_seconds(ckpt_dir, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "long.wav", 0.5 * clip(26.0), SR, subtype="PCM_16")
    audio = tiny_rep(ckpt_dir).load(tmp_path / "long.wav")
    assert len(audio) == 25 * SR and np.abs(audio).max() <= 1.0


def test_5b_time_signal_bins():
    """The 5B label: total-length bin 0; absolute bins 0..5 and relative bins 0..49 over 8,192 positions."""
    with torch.device("meta"):
        from jukemir.representations.jukebox.prior import LabelConditioner

        conditioner = LabelConditioner(PriorHps())
    total, start, end = torch.tensor([[2734080.0]]), torch.tensor([[0.0]]), torch.tensor([[1048576.0]])
    assert conditioner.total_length_emb.bin_ids(total).tolist() == [[0]]
    absolute = conditioner.absolute_pos_emb.bin_ids(start, end)[0].numpy()
    relative = conditioner.relative_pos_emb.bin_ids(start / total, end / total)[0].numpy()
    t = np.arange(8192)
    np.testing.assert_array_equal(absolute, np.floor(128 * (1048576 * t / 8192) / (600 * SR)))
    np.testing.assert_array_equal(relative, np.floor(128 * (1048576 / 2734080) * t / 8192))
    assert (absolute.max(), relative.max()) == (5, 49)


# ---------------------------------------------------------------- independent re-computation


def reference_codes(vq: dict, audio: np.ndarray) -> torch.Tensor:
    """Top-level codes from the saved VQ-VAE weights with plain conv1d calls."""
    x = torch.from_numpy(audio)[None, None]
    prefix = "encoders.2.level_blocks"
    for i, down_t in enumerate(TINY["downs_t"]):
        for j in range(down_t):
            x = F.conv1d(
                x,
                vq[f"{prefix}.{i}.model.{j}.0.weight"],
                vq[f"{prefix}.{i}.model.{j}.0.bias"],
                stride=2,
                padding=1,
            )
            for r in range(TINY["depth"]):
                u = f"{prefix}.{i}.model.{j}.1.model.{r}.model"
                dil = 3**r
                y = F.conv1d(F.relu(x), vq[f"{u}.1.weight"], vq[f"{u}.1.bias"], padding=dil, dilation=dil)
                x = x + F.conv1d(F.relu(y), vq[f"{u}.3.weight"], vq[f"{u}.3.bias"])
        x = F.conv1d(
            x, vq[f"{prefix}.{i}.model.{down_t}.weight"], vq[f"{prefix}.{i}.model.{down_t}.bias"], padding=1
        )
    z = x[0].T  # (tokens, emb)
    return ((z[:, None, :] - vq["bottleneck.level_blocks.2.k"][None]) ** 2).sum(-1).argmin(-1)


def reference_layers(p: dict, tokens: torch.Tensor, n_layers: int) -> list[torch.Tensor]:
    """Residual stream after blocks 1..n_layers, from the saved prior weights, dense masked attention."""
    T, bc, heads = len(tokens), BLOCK_CTX, TINY["heads"]
    total = (int(62 * SR) // HOP) * HOP
    window = N_CTX * HOP
    t = np.arange(N_CTX)
    t_bins = TINY["t_bins"]
    total_bin = math.floor(t_bins * (total - 60 * SR) / (540 * SR))
    abs_bins = np.floor(t_bins * (window * t / N_CTX) / (600 * SR)).astype(int)
    rel_bins = np.floor(t_bins * (window / total) * t / N_CTX).astype(int)
    assert rel_bins.max() > 0  # the relative-position table is exercised
    x_cond = (
        p["y_emb.total_length_emb.emb.weight"][total_bin]
        + p["y_emb.absolute_pos_emb.emb.weight"][abs_bins]
        + p["y_emb.relative_pos_emb.emb.weight"][rel_bins]
    )
    y_cond = p["y_emb.artist_emb.emb.weight"][0] + p["y_emb.bow_genre_emb.emb.weight"][0]
    shifted = torch.cat(
        [y_cond[None], p["prior.x_emb.weight"][tokens[:-1]]]
    )  # start token, then tokens shifted right
    x = shifted + p["prior.pos_emb.pos_emb"][:T] + x_cond[:T]

    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    masks = [
        (i // bc == j // bc) & (j <= i),  # row
        (i % bc == j % bc) & (j <= i),  # column
        (j // bc == i // bc - 1),  # previous row
    ]
    outs = []
    for d in range(n_layers):
        b = f"prior.transformer._attn_mods.{d}"

        def lin(v, name, b=b):
            return v @ p[f"{b}.{name}.w"].float() + p[f"{b}.{name}.b"]

        def ln(v, name, b=b):
            return F.layer_norm(v, (WIDTH,), p[f"{b}.{name}.weight"], p[f"{b}.{name}.bias"], 1e-5)

        q, k, v = lin(ln(x, "ln_0"), "attn.c_attn").chunk(3, dim=-1)
        hd = q.shape[-1] // heads
        q, k, v = (u.reshape(T, heads, hd).transpose(0, 1) for u in (q, k, v))
        scores = q @ k.transpose(1, 2) / math.sqrt(hd)
        allowed = torch.from_numpy(masks[d % 3])
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        weights = torch.nan_to_num(weights) * allowed.any(-1, keepdim=True)  # no key (first row): output 0
        a = lin((weights @ v).transpose(0, 1).reshape(T, heads * hd), "attn.c_proj")
        h = x + a
        mid = lin(ln(h, "ln_1"), "mlp.c_fc")
        x = h + lin(mid * torch.sigmoid(1.702 * mid), "mlp.c_proj")
        outs.append(x)
    return outs


def test_layers_match_an_independent_recomputation(ckpt_dir):
    """Blocks 1-3 (row, column, previous row) with the shift-right start token and the time signal."""
    vq = load_official(ckpt_dir / "vqvae.pth.tar")
    p = load_official(ckpt_dir / "prior_level_2.pth.tar")
    audio = clip(0.25, 7)
    rep = tiny_rep(ckpt_dir, layers=[1, 2, 3], pool="none")
    tokens = rep.encode([audio])[0]
    ref_tokens = reference_codes(vq, audio[: rep.crop_samples])[:N_CTX]
    assert torch.equal(tokens, ref_tokens) and len(set(tokens.tolist())) > 5
    ours = rep(audio)
    for layer, ref in enumerate(reference_layers(p, ref_tokens, 3)):
        np.testing.assert_allclose(ours[layer], ref.numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(ours[0], ours[1], atol=1e-2)


# ---------------------------------------------------------------- the registry and the CLI


def test_registry_builds_it(ckpt_dir):
    rep = get_representation(
        "jukebox", device="cpu", weights=str(ckpt_dir), model="checkpoint", precision="fp32", layers=[2]
    )
    assert rep.name == "jukebox" and rep.sample_rate == SR and rep.normalize
    with pytest.raises(ValueError, match="clmr_frame"):
        get_representation("jukebox", clmr_frame=59049)


def test_cli_extract_runs_through_the_folder_runner(ckpt_dir, tmp_path):
    import soundfile as sf

    from jukemir.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for k, seconds in enumerate((0.3, 0.25, 0.35)):
        sf.write(inputs / f"c{k}.wav", 0.5 * clip(seconds, k), SR, subtype="PCM_16")
    sf.write(
        inputs / "short.wav", 0.5 * clip(0.1, 9)[:2205], 22050, subtype="PCM_16"
    )  # 4,410 samples at 44.1 kHz
    out = tmp_path / "out"
    args = [
        "extract",
        "jukebox",
        str(inputs),
        str(out),
        "--weights",
        str(ckpt_dir),
        "--model",
        "checkpoint",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--layers",
        "1,3",
        "--no-progress",
    ]
    assert main(args) == 1
    for k in range(3):
        assert np.load(out / f"c{k}.npy").shape == (2, WIDTH)
    assert not (out / "short.npy").exists()
    errors = (out / ".jukemir" / "errors.jsonl").read_text()
    assert "short.wav" in errors and "--allow-short" in errors
    assert main(args + ["--allow-short"]) == 0
    assert np.load(out / "short.npy").shape == (2, WIDTH)
    direct = tiny_rep(ckpt_dir, layers=[1, 3])
    np.testing.assert_allclose(
        np.load(out / "c1.npy"), direct(direct.load(inputs / "c1.wav")), rtol=1e-5, atol=1e-6
    )
