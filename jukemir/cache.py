"""The cache root and the path of every pipeline stage's output.

Layout (the original's; docs/architecture.md), under ``$JUKEMIR_CACHE_DIR``
(default ``~/.jukemir/cache``)::

    datasets/<name>/...                                   raw downloaded assets
    processed/<dataset>/meta.json, wav/<uid>.wav          decoded datasets
    representations/<dataset>/<representation>/<uid>.npy  features
    probes/<dataset>/<representation>/<cfg_uid>/...       trained probes
    models/<representation>/...                           converted model weights

:class:`Layout` builds every one of these paths (for this cache or one under
any other root); the writers create the folders they write into.

A representation's folder is named by :func:`folder_name`: valid names
(``chroma``, ``mert-v1-95m``) are used as they are; names with a ``:``
(``hf:facebook/wav2vec2-base``, ``my_pkg.reps:MyRep``) become a readable slug
plus 8 hex digits of the name's sha1, e.g. ``hf-facebook-wav2vec2-base-f9544348``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
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


def folder_name(representation: str) -> str:
    """The folder name of a representation (deterministic, and
    ``folder_name(folder_name(x)) == folder_name(x)``).

    A name :func:`check_name` accepts is its own folder name. A name with a
    ``:`` (``hf:facebook/wav2vec2-base``, ``hear:hearbaseline.vqt``,
    ``my_pkg.reps:MyRep``) becomes its runs of other characters replaced by
    ``-`` (at most 100 characters), then ``-`` and the first 8 hex digits of the
    sha1 of the name, so that two names never share a folder:
    ``hf:facebook/wav2vec2-base`` -> ``hf-facebook-wav2vec2-base-f9544348``.
    Any other name is refused as :func:`check_name` refuses it (``a/b``, ``../x``).
    """
    if not isinstance(representation, str) or ":" not in representation:
        return check_name(representation, "representation")
    if NAME_PATTERN.match(representation):
        return representation
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "-", representation)[:100].strip("-._+") or "representation"
    return f"{slug}-{hashlib.sha1(representation.encode('utf-8')).hexdigest()[:8]}"


def cache_dir(create: bool = True) -> Path:
    """Return the absolute cache root (``$JUKEMIR_CACHE_DIR`` or ``~/.jukemir/cache``)."""
    root = os.environ.get(ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".jukemir" / "cache"
    path = path.resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Layout:
    """Every path of a cache, under one root (the module docstring's layout).

    ``Layout()`` is the cache of ``$JUKEMIR_CACHE_DIR`` (read when it is made);
    ``Layout(root)`` is one under any folder, e.g. a test's. Every dataset,
    model and representation name is checked as :func:`check_name` and
    :func:`folder_name` do, so no name reaches outside its folder. The methods
    only build paths: whoever writes creates the folders (``jukemir.io``'s
    writers do). A layout pickles as its root, so a Ray worker reads the same
    folders as the driver that made it.

    >>> Layout("/data/cache").representations("gtzan_ff", "hf:facebook/wav2vec2-base")
    PosixPath('/data/cache/representations/gtzan_ff/hf-facebook-wav2vec2-base-f9544348')
    """

    root: Path = None  # type: ignore[assignment]  # None: $JUKEMIR_CACHE_DIR, resolved in __post_init__

    def __post_init__(self):
        root = cache_dir(create=False) if self.root is None else Path(self.root).expanduser().resolve()
        object.__setattr__(self, "root", root)

    def _sub(self, stage: str, *names: str | None) -> Path:
        return self.root.joinpath(stage, *(name for name in names if name))

    def datasets(self, name: str | None = None) -> Path:
        """Raw downloaded assets: ``<root>/datasets[/<name>]``."""
        return self._sub("datasets", name and check_name(name))

    def processed(self, dataset: str | None = None) -> Path:
        """Decoded datasets: ``<root>/processed[/<dataset>]``."""
        return self._sub("processed", dataset and check_name(dataset, "dataset"))

    def meta(self, dataset: str) -> Path:
        """A processed dataset's items: ``<root>/processed/<dataset>/meta.json``."""
        return self.processed(check_name(dataset, "dataset")) / "meta.json"

    def wav(self, dataset: str) -> Path:
        """A processed dataset's audio: ``<root>/processed/<dataset>/wav``."""
        return self.processed(check_name(dataset, "dataset")) / "wav"

    def representations(self, dataset: str | None = None, representation: str | None = None) -> Path:
        """Features: ``<root>/representations[/<dataset>[/<folder_name(representation)>]]``."""
        return self._sub("representations", *self._pair(dataset, representation))

    def probes(self, dataset: str | None = None, representation: str | None = None) -> Path:
        """Trained probes: ``<root>/probes[/<dataset>[/<folder_name(representation)>]]``."""
        return self._sub("probes", *self._pair(dataset, representation))

    def run(self, cfg) -> Path:
        """The run folder of a :class:`~jukemir.probe.config.ProbeConfig`:
        ``<root>/probes/<dataset>/<representation>/<cfg.uid()>``."""
        return self.probes(cfg["dataset"], cfg["representation"]) / cfg.uid()

    def models(self, name: str | None = None) -> Path:
        """Downloaded and converted model weights: ``<root>/models[/<name>]``."""
        return self._sub("models", name and check_name(name))

    def report(self) -> Path:
        """The default report folder: ``<root>/report``."""
        return self.root / "report"

    @staticmethod
    def _pair(dataset: str | None, representation: str | None) -> tuple:
        if representation is not None and dataset is None:
            raise ValueError("a representation's folder needs its dataset")
        return (dataset and check_name(dataset, "dataset"), representation and folder_name(representation))


def _made(path: Path, create: bool) -> Path:
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir(create: bool = True) -> Path:
    """``Layout().datasets()``, created unless ``create=False``."""
    return _made(Layout().datasets(), create)


def models_dir(name: str | None = None, create: bool = True) -> Path:
    """``Layout().models(name)``, created unless ``create=False``."""
    return _made(Layout().models(name), create)
