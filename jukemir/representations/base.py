"""The Representation interface: load the model once, then embed audio.

A representation is built once (weights loaded once) and then called on
decoded audio; it never touches files. The folder runner
(:mod:`jukemir.representations.folder`) decodes files with
:meth:`Representation.load` and writes what the model returns.

Subclasses set the class attributes and implement :meth:`__call__` (one clip)
and, where batching pays, :meth:`batch`. A representation whose features
depend on their batch mates (the original choi) also declares what
:func:`jukemir.representations.folder.batch_dependent` reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..audio import RESAMPY_VERSION, load_audio
from ..errors import UserError


class Representation:
    """Base class. ``rep(audio) -> np.ndarray`` of shape :attr:`output_shape`, float32.

    Class attributes:
        name: registry name (``"chroma"``, ``"jukebox"``, ...).
        version: bumped whenever the features a given input produces change;
            stored in output provenance so stale outputs are recomputed.
        sample_rate: rate in Hz the model expects; :meth:`load` resamples to it.
        normalize: peak-normalise audio on load (the original's behaviour).
        resampler: the resampler :meth:`load` uses (see :mod:`jukemir.audio`).
        resampy: whose numbers the kaiser resamplers give: "0.2" (resampy 0.2.2, the original's) or
            "0.4" (resampy >= 0.3); recorded in the provenance.
        dim: size of the (last axis of the) output vector.
        preferred_batch: how many clips the folder runner groups per
            :meth:`batch` call for batch-independent models (speed only).
        may_be_nonfinite: the faithful model can emit inf/NaN (musicnn's float16
            log); the runner then warns per file instead of failing.
    """

    name: str = "base"
    version: str = "1"
    sample_rate: int = 22050
    normalize: bool = False
    resampler: str = "kaiser_best"
    resampy: str = RESAMPY_VERSION  # the resampy generation whose kaiser filters ``resampler`` means
    dim: int = 0
    preferred_batch: int = 1
    may_be_nonfinite: bool = False

    @property
    def output_shape(self) -> tuple:
        """Shape of one output; ``None`` entries are free (e.g. a time axis)."""
        return (self.dim,)

    def options(self) -> dict:
        """The options that change the output (stored in provenance). Override to add."""
        return {}

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode ``path`` the way this representation expects (rate, mono, normalisation)."""
        return load_audio(
            path, self.sample_rate, normalize=self.normalize, resampler=self.resampler, resampy=self.resampy
        )

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Embed one mono clip at :attr:`sample_rate` Hz; returns float32 of :attr:`output_shape`."""
        raise NotImplementedError

    def batch(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed several clips; the default calls :meth:`__call__` on each."""
        return [self(a) for a in audios]

    def check_output(self, features: np.ndarray) -> np.ndarray:
        """Validate and return ``features`` as float32 of :attr:`output_shape`; raise ValueError if not."""
        features = np.asarray(features)
        shape = self.output_shape
        ok = features.ndim == len(shape) and all(s is None or s == f for s, f in zip(shape, features.shape))
        if not ok:
            raise UserError(f"{self.name} produced shape {features.shape}, expected {shape}")
        return features.astype(np.float32, copy=False)

    def provenance(self) -> dict:
        """What identifies this representation's outputs: name, version, options, and for a class
        from another package (a plugin) that package's distribution and version."""
        from .plugins import distribution_of

        record = {"representation": self.name, "version": self.version, "options": self.options()}
        if self.resampler.startswith("kaiser"):  # which resampy's numbers a resampled input got
            record["resampler"] = f"{self.resampler} (resampy {self.resampy})"
        package = distribution_of(type(self))
        if package is not None:
            record["package"] = package
        return record


def layered_output_shape(dim: int, layers: Sequence[int], pool: str) -> tuple:
    """Output shape of a model read at ``layers``: ``(dim,)`` mean-pooled, ``(None, dim)`` per frame,
    with a leading ``len(layers)`` axis when several layers are stacked."""
    per_layer = (dim,) if pool == "mean" else (None, dim)
    return per_layer if len(layers) == 1 else (len(layers), *per_layer)
