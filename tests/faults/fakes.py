"""Representations for the fault suite: cheap, deterministic, and registered in worker processes.

They read 8 kHz audio (the suite's tones are written at 8 kHz, so nothing is
resampled and no heavy library is imported) and log every clip they embed to
``$FAULT_JOURNAL`` (one ``<sha1 of the audio> <pid>`` line, appended with one
``write``), so a test can count how often each file was computed.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from jukemir.representations import Representation


def fingerprint(audio: np.ndarray) -> str:
    """sha1 of a decoded clip's float32 bytes: names a clip in the journal."""
    return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


def _journal(audio: np.ndarray) -> None:
    path = os.environ.get("FAULT_JOURNAL")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{fingerprint(audio)} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


class Slow(Representation):
    """8 statistics of the clip, after ``$FAULT_DELAY`` seconds of "model time" (default 0).

    ``model`` (the CLI's ``--model``) is an option that changes the output (it
    scales the features), and ``$FAULT_VERSION`` overrides :attr:`version`, so
    that tests can make outputs stale both ways.
    """

    name = "slow"
    sample_rate = 8000
    dim = 8

    def __init__(self, model: str = "plain", device: str | None = None):
        del device
        self.model = model
        self.scale = {"plain": 1.0, "double": 2.0}[model]
        self.delay = float(os.environ.get("FAULT_DELAY", "0"))
        self.version = os.environ.get("FAULT_VERSION", "1")

    def options(self) -> dict:
        return {"model": self.model}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        _journal(audio)
        if self.delay:
            time.sleep(self.delay)
        quarters = np.array_split(audio, 4)
        feats = [audio.mean(), audio.std(), np.abs(audio).max(), len(audio) / self.sample_rate]
        feats += [float(np.sqrt(np.mean(q**2))) for q in quarters]
        return (self.scale * np.array(feats, dtype=np.float64)).astype(np.float32)


class BatchStats(Slow):
    """Batch dependent, like the original choi: each clip's statistics minus its batch's mean."""

    name = "batchstats"
    batch_dependent = True
    default_batch_size = 4

    def batch(self, audios):
        feats = np.stack([Slow.__call__(self, a) for a in audios])
        return list(feats - feats.mean(axis=0, keepdims=True))


class Loud(Slow):
    """Returns NaN for clips whose peak exceeds 0.9 (a model that blows up on some inputs)."""

    name = "loud"

    def __call__(self, audio):
        feats = super().__call__(audio)
        if np.abs(audio).max() > 0.9:
            feats[1] = np.nan
        return feats


REGISTRY = {"slow": "faults.fakes:Slow", "batchstats": "faults.fakes:BatchStats", "loud": "faults.fakes:Loud"}
