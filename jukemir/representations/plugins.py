"""Representations from outside the registry: plugins, ``module:Class``, ``hf:`` and ``hear:`` names.

A name the registry does not hold is resolved, in this order:

1. ``hf:<model id or local folder>``: a Hugging Face audio encoder
   (:class:`jukemir.representations.hf.HFEncoder`, ``model=`` bound to the rest of the name);
2. ``hear:<module>``: an installed HEAR 2021 module
   (:class:`jukemir.representations.hear_adapter.HEARModule`, ``module=`` bound);
3. an entry point of the group ``jukemir.representations`` (name -> ``"module:Class"``)
   declared by an installed distribution;
4. ``module:Class`` (``module`` importable, ``Class`` a
   :class:`~jukemir.representations.base.Representation` subclass).

The built representation's :attr:`~Representation.name` is the name it was asked
by, so its outputs' provenance and the folder it is stored in
(:func:`jukemir.cache.folder_name`) follow that name. The distribution a class
comes from is recorded in provenance (:func:`distribution_of`).
"""

from __future__ import annotations

import importlib
import re
from importlib import metadata

from ..errors import UserError

ENTRY_POINT_GROUP = "jukemir.representations"
PREFIXES = {
    "hf": "jukemir.representations.hf:HFEncoder",
    "hear": "jukemir.representations.hear_adapter:HEARModule",
}
PREFIX_OPTION = {"hf": "model", "hear": "module"}
_MODULE_CLASS = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed ``jukemir.representations`` entry points, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import(target: str, what: str):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{what}: cannot import module {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{what}: module {module_name!r} has no {attr!r}") from None


def _check_class(cls, what: str):
    from .base import Representation

    if not (isinstance(cls, type) and issubclass(cls, Representation)):
        raise UserError(f"{what}: {cls!r} is not a jukemir Representation subclass")
    return cls


def resolve(name: str) -> tuple[type, dict]:
    """``(class, options the name binds)`` of a name outside the registry; ``ValueError`` if it names nothing.

    >>> resolve("hf:facebook/wav2vec2-base")[1]
    {'model': 'facebook/wav2vec2-base'}
    """
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXES:
        if not rest:
            raise UserError(
                f"representation {name!r}: give what follows '{prefix}:', e.g. {_EXAMPLES[prefix]}"
            )
        return _import(PREFIXES[prefix], name), {PREFIX_OPTION[prefix]: rest}
    found = entry_points()
    if name in found:
        try:
            cls = found[name].load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named in one line, not a traceback
            raise UserError(
                f"representation {name!r}: entry point {found[name].value!r} failed to load "
                f"({type(exc).__name__}: {exc})"
            ) from None
        return _check_class(cls, f"representation {name!r} (entry point {found[name].value})"), {}
    if _MODULE_CLASS.fullmatch(name):
        return _check_class(_import(name, f"representation {name!r}"), f"representation {name!r}"), {}
    raise LookupError(name)


_EXAMPLES = {"hf": "hf:facebook/wav2vec2-base or hf:/path/to/snapshot", "hear": "hear:hearbaseline.vqt"}


def distribution_of(cls: type) -> dict | None:
    """``{"distribution", "version", "module"}`` of the installed distribution that provides ``cls``.

    ``None`` for jukemir's own classes; ``distribution``/``version`` are ``None``
    for a module that no installed distribution provides (e.g. a local file).
    """
    module = cls.__module__
    top = module.split(".")[0]
    if top == "jukemir":
        return None
    return dict(package_of_module(top), module=module)


def package_of_module(top: str) -> dict:
    """``{"distribution", "version"}`` of the distribution that provides the top-level module ``top``."""
    names = metadata.packages_distributions().get(top, [])
    if not names:
        return {"distribution": None, "version": None}
    return {"distribution": names[0], "version": metadata.version(names[0])}


__all__ = ["ENTRY_POINT_GROUP", "PREFIXES", "distribution_of", "entry_points", "package_of_module", "resolve"]
