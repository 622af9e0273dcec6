"""``hear:<module>``: any installed HEAR 2021 module as a jukemir representation.

The module (e.g. ``hearbaseline.vqt``) is imported and its model loaded once
with ``load_model(model_file_path)`` (``load_model()`` when no path is given).
Each clip, mono at the model's ``sample_rate`` (resampy ``kaiser_best``, not
normalised), goes through ``get_scene_embeddings`` as a batch of one sound;
the output is that scene embedding, ``(scene_embedding_size,)`` float32 (the
module's own clip-level summary, for most HEAR modules the mean of its
timestamp embeddings). Clips of equal length are embedded together, as HEAR
batches are of equal-length sounds.

Provenance records the module, the distribution that provides it and its
version, and the sha256 of the model file.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..assets import file_checksum
from ..device import torch_device
from ..errors import NotFoundError, UserError
from .base import Representation
from .plugins import package_of_module

API = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")


class HEARModule(Representation):
    """A HEAR 2021 module (see the module docstring).

    Args:
        module: the HEAR module's import name, e.g. ``hearbaseline.vqt``.
        model_file_path: passed to the module's ``load_model`` (its weights); ``""`` for its default.
        device: torch device the model and the audio go to; default ``cuda`` when available.
    """

    name = "hear"
    version = "1"
    normalize = False
    resampler = "kaiser_best"
    preferred_batch = 8

    def __init__(self, module: str, model_file_path: str | os.PathLike = "", device: str | None = None):
        try:
            self.module = importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"hear:{module}: cannot import the HEAR module {module!r} ({exc})") from None
        missing = [f for f in API if not callable(getattr(self.module, f, None))]
        if missing:
            raise UserError(f"hear:{module}: not a HEAR module (no {', '.join(missing)})")
        self.module_name = module
        self.model_file = str(model_file_path or "")
        if self.model_file and not Path(self.model_file).exists():
            raise NotFoundError(f"{self.model_file}: model file of hear:{module} not found")
        self.model = self.module.load_model(self.model_file) if self.model_file else self.module.load_model()
        self.device = torch_device(device)
        if isinstance(self.model, torch.nn.Module):
            self.model = self.model.to(self.device).eval()
        for attr in ("sample_rate", "scene_embedding_size"):
            if not isinstance(getattr(self.model, attr, None), int):
                raise UserError(f"hear:{module}: the model has no integer {attr}")
        self.sample_rate = self.model.sample_rate
        self.dim = self.model.scene_embedding_size
        self.model_id = (
            file_checksum(self.model_file) if Path(self.model_file).is_file() else self.model_file or None
        )

    def options(self) -> dict:
        top = self.module_name.split(".")[0]
        return {"module": self.module_name, "model_file": self.model_id, **package_of_module(top)}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at :attr:`sample_rate` Hz -> ``(scene_embedding_size,)`` float32."""
        return self.batch([audio])[0]

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed clips; those of equal length go to ``get_scene_embeddings`` together."""
        out: list[np.ndarray | None] = [None] * len(audios)
        by_length: dict[int, list[int]] = {}
        for i, audio in enumerate(audios):
            audio = np.asarray(audio)
            if audio.ndim != 1:
                raise UserError(f"expected mono audio of shape (n,), got {audio.shape}")
            by_length.setdefault(len(audio), []).append(i)
        with torch.inference_mode():
            for idx in by_length.values():
                sounds = torch.from_numpy(np.stack([np.asarray(audios[i], dtype=np.float32) for i in idx]))
                embeddings = self.module.get_scene_embeddings(sounds.to(self.device), self.model)
                embeddings = np.asarray(torch.as_tensor(embeddings).float().cpu())
                if embeddings.shape != (len(idx), self.dim):
                    raise UserError(
                        f"hear:{self.module_name}: get_scene_embeddings gave shape {embeddings.shape}, "
                        f"expected {(len(idx), self.dim)}"
                    )
                for i, row in zip(idx, embeddings):
                    out[i] = row.astype(np.float32)
        return out


__all__ = ["HEARModule"]
