"""The mert-v1-95m representation as a HEAR 2021 module (see :mod:`jukemir.hear`)."""

from . import get_scene_embeddings, get_timestamp_embeddings, load


def load_model(model_file_path: str = ""):
    """The mert-v1-95m representation as a HEAR model; a non-empty ``model_file_path`` is its ``weights``."""
    return load("mert-v1-95m", model_file_path)


__all__ = ["get_scene_embeddings", "get_timestamp_embeddings", "load_model"]
