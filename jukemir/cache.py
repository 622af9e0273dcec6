"""The cache root and the path of every pipeline stage's output.

Layout (the original's; docs/architecture.md), under ``$JUKEMIR_CACHE_DIR``
(default ``~/.jukemir/cache``)::

    datasets/<name>/...                                   raw downloaded assets
    processed/<dataset>/meta.json, wav/<uid>.wav          decoded datasets
    representations/<dataset>/<representation>/<uid>.npy  features
    probes/<dataset>/<representation>/<cfg_uid>/...       trained probes
    models/<representation>/...                           converted model weights

Directories are created on demand by the functions that return them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

ENV_VAR = "JUKEMIR_CACHE_DIR"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be one folder name of the cache, else raise :class:`UserError`.

    Dataset, representation and model names become folder names
    (``processed/<dataset>``, ``representations/<dataset>/<representation>``),
    so every command checks them the same way: letters, digits and ``_ . + -``,
    not starting with ``.``, ``+`` or ``-``, at most 128 characters. No name can
    therefore reach outside its folder or hide itself.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise UserError(
            f"{what} {name!r} is not a valid name: use letters, digits and _ . + - "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def cache_dir(create: bool = True) -> Path:
    """Return the absolute cache root (``$JUKEMIR_CACHE_DIR`` or ``~/.jukemir/cache``)."""
    root = os.environ.get(ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".jukemir" / "cache"
    path = path.resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(stage: str, *names: str, create: bool = True) -> Path:
    for name in names:
        check_name(name)
    path = cache_dir(create=create).joinpath(stage, *names)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir(create: bool = True) -> Path:
    """Raw downloaded assets: ``<cache>/datasets``."""
    return _sub("datasets", create=create)


def processed_dir(dataset: str | None = None, create: bool = True) -> Path:
    """Processed datasets: ``<cache>/processed[/<dataset>]``."""
    return _sub("processed", *([dataset] if dataset else []), create=create)


def representations_dir(
    dataset: str | None = None, representation: str | None = None, create: bool = True
) -> Path:
    """Features: ``<cache>/representations[/<dataset>[/<representation>]]``."""
    parts = [p for p in (dataset, representation) if p]
    return _sub("representations", *parts, create=create)


def probes_dir(
    dataset: str | None = None, representation: str | None = None, create: bool = True
) -> Path:
    """Trained probes: ``<cache>/probes[/<dataset>[/<representation>]]``."""
    parts = [p for p in (dataset, representation) if p]
    return _sub("probes", *parts, create=create)


def models_dir(name: str | None = None, create: bool = True) -> Path:
    """Downloaded and converted model weights: ``<cache>/models[/<name>]``."""
    return _sub("models", *([name] if name else []), create=create)
