"""jukemir: how well do pretrained music-audio representations transfer to MIR tasks?

Public API::

    import jukemir
    rep = jukemir.get_representation("chroma")      # load once
    vec = rep(audio)                                  # one clip -> float32 vector
    jukemir.extract("chroma", "in/", "out/")          # a folder of audio -> .npy files
"""

import os as _os

# OpenMP threads that spin while they wait (libgomp's default) turn a shared or busy CPU into a trap:
# a probe grid that takes 13 s on one thread took 380 s on two spinning threads when other work held
# the cores, and 20 s with passive waiting. Set before torch starts its thread pool; a value the user
# set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
version = __version__


def get_representation(name: str, **options):
    """Build a representation by name (see :mod:`jukemir.representations`)."""
    from .representations import get_representation as _get

    return _get(name, **options)


def extract(representation, input_dir, output_dir, **kwargs):
    """Embed every file of ``input_dir`` into ``output_dir/<stem>.npy`` (see
    :func:`jukemir.representations.folder.run_folder`)."""
    from .representations.folder import run_folder

    return run_folder(representation, input_dir, output_dir, **kwargs)


__all__ = ["__version__", "version", "get_representation", "extract"]
