"""Every jukemir representation as a HEAR 2021 module (``load_model``, ``get_scene_embeddings``,
``get_timestamp_embeddings``).

    import jukemir.hear.mfcc as module              # jukemir.hear.<name> for the built-ins
    model = module.load_model()                     # model_file_path: the representation's weights
    module.get_scene_embeddings(audio, model)       # (n_sounds, n_samples) -> (n_sounds, D)
    module.get_timestamp_embeddings(audio, model)   # -> (n_sounds, T, D), (n_sounds, T) ms

Built-in modules: ``chroma``, ``mfcc``, ``choi``, ``musicnn``, ``clmr``, ``jukebox``,
``mert_v1_95m``, ``mert_v1_330m``, ``clap_music`` (``hear-validator jukemir.hear.mfcc`` checks one). Any
other representation (a plugin, ``hf:<model>``, ``module:Class``) through
:func:`hear_api`, which returns the three functions for a name and options.

The model is a :class:`HEARModel` (a ``torch.nn.Module``) with:

* ``sample_rate``: the representation's rate when HEAR allows it (16,000,
  22,050, 44,100 or 48,000 Hz), else 48,000 Hz, and sounds are resampled
  (``kaiser_best``) to the representation's rate (24 kHz for MERT);
* ``scene_embedding_size`` = ``timestamp_embedding_size``: the number of values
  of one output of the representation (its output flattened).

A sound's scene embedding is the representation's own clip-level output, the
vector ``jukemir extract`` writes (peak-normalised first when the
representation normalises on load). Timestamp embeddings are the
representation applied to windows of :data:`WINDOW_SECONDS` (1 s unless the
representation needs more: clmr 2.7 s, musicnn 3 s, jukebox 24 s) centred every
``hop_ms`` (default 50 ms) from 0 ms to the end of the sound, which is padded
with zeros by half a window at both ends (the HEAR baseline's framing); each
timestamp is its window's centre in milliseconds.
"""

from __future__ import annotations

import types

import numpy as np
import torch

from ..audio import peak_normalize, resample
from ..errors import UserError

HEAR_RATES = (16000, 22050, 44100, 48000)
FALLBACK_RATE = 48000
TIMESTAMP_HOP_MS = 50.0
WINDOW_SECONDS = {"clmr": 2.7, "musicnn": 3.0, "jukebox": 24.0}
DEFAULT_WINDOW_SECONDS = 1.0


class HEARModel(torch.nn.Module):
    """A built jukemir representation with the attributes the HEAR API asks for (see the module docstring)."""

    def __init__(self, rep, window_seconds: float | None = None):
        super().__init__()
        if any(s is None for s in rep.output_shape):
            raise UserError(
                f"{rep.name}: HEAR needs outputs of a fixed size, got shape {rep.output_shape} "
                "(use pool='mean')"
            )
        self.rep = rep
        self.sample_rate = int(rep.sample_rate) if rep.sample_rate in HEAR_RATES else FALLBACK_RATE
        self.scene_embedding_size = int(np.prod(rep.output_shape))
        self.timestamp_embedding_size = self.scene_embedding_size
        self.window_seconds = float(window_seconds or WINDOW_SECONDS.get(rep.name, DEFAULT_WINDOW_SECONDS))

    def prepare(self, audio: torch.Tensor) -> list[np.ndarray]:
        """``(n_sounds, n_samples)`` at :attr:`sample_rate` -> float32 arrays at the representation's rate."""
        if audio.ndim != 2:
            raise UserError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
        sounds = [np.ascontiguousarray(a, dtype=np.float32) for a in audio.detach().cpu().numpy()]
        if self.sample_rate != self.rep.sample_rate:
            sounds = [resample(a, self.sample_rate, self.rep.sample_rate) for a in sounds]
        return sounds

    def embed(self, sounds: list[np.ndarray]) -> torch.Tensor:
        """One flattened output per sound, ``(n, embedding size)`` float32."""
        if self.rep.normalize:
            sounds = [peak_normalize(s) for s in sounds]
        out = [self.rep.check_output(f).reshape(-1) for f in self.rep.batch(sounds)]
        return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, self.scene_embedding_size)


def get_scene_embeddings(audio: torch.Tensor, model: HEARModel) -> torch.Tensor:
    """``(n_sounds, n_samples)`` at ``model.sample_rate`` -> ``(n_sounds, model.scene_embedding_size)``
    float32."""
    return model.embed(model.prepare(audio)).to(audio.device)


def get_timestamp_embeddings(
    audio: torch.Tensor, model: HEARModel, hop_ms: float = TIMESTAMP_HOP_MS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_sounds, n_samples)`` -> embeddings ``(n_sounds, T, size)`` and their centres in ms
    ``(n_sounds, T)``.

    ``T = 1 + floor(duration / hop_ms)``; window ``k`` is centred on ``k * hop_ms``.
    """
    sounds = model.prepare(audio)
    rate = model.rep.sample_rate
    window = max(1, round(model.window_seconds * rate))
    n_samples = len(sounds[0]) if sounds else 0
    n_steps = 1 + int(np.floor(1000.0 * n_samples / rate / hop_ms + 1e-9))
    starts = [round(k * hop_ms * rate / 1000.0) for k in range(n_steps)]
    windows = []
    for sound in sounds:
        padded = np.pad(sound, (window // 2, window - window // 2))
        windows.extend(padded[s : s + window] for s in starts)
    embeddings = model.embed(windows).reshape(len(sounds), n_steps, -1)
    timestamps = torch.arange(n_steps, dtype=torch.float32).mul(hop_ms).expand(len(sounds), n_steps)
    return embeddings.to(audio.device), timestamps.to(audio.device)


def load(name: str, model_file_path: str = "", **options) -> HEARModel:
    """Build representation ``name`` (weights from ``model_file_path`` when given) as a :class:`HEARModel`."""
    from ..representations import get_representation

    window = options.pop("hear_window_seconds", None)
    if model_file_path:
        options["weights"] = model_file_path
    return HEARModel(get_representation(name, **options), window)


def hear_api(name: str, **options) -> types.SimpleNamespace:
    """``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings`` for representation ``name``.

    ``options`` go to the representation (``hear_window_seconds`` sets the
    timestamp window). ``load_model(model_file_path="")`` passes a non-empty path
    as the representation's ``weights``.
    """

    def load_model(model_file_path: str = "") -> HEARModel:
        return load(name, model_file_path, **options)

    return types.SimpleNamespace(
        load_model=load_model,
        get_scene_embeddings=get_scene_embeddings,
        get_timestamp_embeddings=get_timestamp_embeddings,
    )


__all__ = ["HEARModel", "get_scene_embeddings", "get_timestamp_embeddings", "hear_api", "load"]
