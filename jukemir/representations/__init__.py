"""Registry of representations: ``name -> Representation`` class, imported lazily.

>>> rep = get_representation("chroma")
>>> rep(audio_at_22050_hz).shape
(72,)
"""

from __future__ import annotations

import importlib
import inspect

from ..errors import UserError
from .base import Representation

# name -> "module:Class"; modules are imported only when asked for, so that a
# light install (chroma/mfcc) never imports a heavy model.
REGISTRY: dict[str, str] = {
    "chroma": "jukemir.representations.handcrafted:Chroma",
    "mfcc": "jukemir.representations.handcrafted:MFCC",
    "choi": "jukemir.representations.choi:Choi",
    "musicnn": "jukemir.representations.musicnn:Musicnn",
    "clmr": "jukemir.representations.clmr:CLMR",
    "jukebox": "jukemir.representations.jukebox:Jukebox",
}

# The paper's output sizes (docs/fidelity/README.md), for checks that need no model.
DIMS = {"chroma": 72, "mfcc": 120, "choi": 160, "musicnn": 4194, "clmr": 512, "jukebox": 4800}


def names() -> list[str]:
    """Names of every registered representation."""
    return list(REGISTRY)


def representation_class(name: str) -> type[Representation]:
    """Return the class registered as ``name`` (imports its module)."""
    if name not in REGISTRY:
        raise UserError(f"unknown representation {name!r}; expected one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_representation(name: str, **options) -> Representation:
    """Build the representation ``name`` once (loading its weights), with ``options``.

    Options a representation does not take raise ``ValueError`` naming them,
    e.g. ``get_representation("chroma", clmr_frame=59049)``.
    """
    cls = representation_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to representation {name!r}")
    return cls(**options)


__all__ = ["Representation", "REGISTRY", "DIMS", "names", "representation_class", "get_representation"]
