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
    "mert-v1-95m": "jukemir.representations.mert:MERT95M",
    "mert-v1-330m": "jukemir.representations.mert:MERT330M",
    "clap-music": "jukemir.representations.clap:CLAPMusic",
}

# The paper's output sizes (docs/fidelity/README.md), for checks that need no model.
DIMS = {"chroma": 72, "mfcc": 120, "choi": 160, "musicnn": 4194, "clmr": 512, "jukebox": 4800}


def names() -> list[str]:
    """Names of every registered representation and installed plugin (entry points)."""
    from .plugins import entry_points

    return list(REGISTRY) + [n for n in entry_points() if n not in REGISTRY]


def _resolve(name: str) -> tuple[type[Representation], dict]:
    """``(class, options bound by the name)``; see :mod:`jukemir.representations.plugins` for other names."""
    if name in REGISTRY:
        module, cls = REGISTRY[name].split(":")
        return getattr(importlib.import_module(module), cls), {}
    from .plugins import resolve

    try:
        return resolve(name)
    except LookupError:
        raise UserError(
            f"unknown representation {name!r}; expected one of {', '.join(names())}, hf:<model>, "
            "hear:<module>, or module:Class"
        ) from None


def representation_class(name: str) -> type[Representation]:
    """Return the class of the representation ``name`` (imports its module)."""
    return _resolve(name)[0]


def get_representation(name: str, **options) -> Representation:
    """Build the representation ``name`` once (loading its weights), with ``options``.

    ``name``: a registered name, an installed plugin's name, ``hf:<model>``,
    ``hear:<module>`` or ``module:Class``. Options a representation does not
    take raise ``ValueError`` naming them, e.g. ``get_representation("chroma", clmr_frame=59049)``.
    """
    cls, bound = _resolve(name)
    parameters = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [k for k in options if k not in parameters and not takes_any]
    if unknown:
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to representation {name!r}")
    clash = sorted(set(bound) & set(options))
    if clash:
        raise UserError(
            f"representation {name!r} sets {', '.join(clash)} itself; do not pass it as an option"
        )
    rep = cls(**bound, **options)
    if rep.name != name:
        rep.name = name  # plugins and hf:/hear: names: the name asked for is the one recorded
    return rep


__all__ = ["DIMS", "REGISTRY", "Representation", "get_representation", "names", "representation_class"]
