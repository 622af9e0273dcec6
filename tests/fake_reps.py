"""Small representations for tests that need a model without weights (importable by worker processes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jukemir.representations import Representation


class Energy(Representation):
    """[mean, std, peak] of the signal at 8 kHz."""

    name = "energy"
    sample_rate = 8000
    dim = 3

    def __call__(self, audio):
        return np.array([audio.mean(), audio.std(), np.abs(audio).max()], np.float32)


class CrashOnce(Energy):
    """Kills its own process (like an OOM kill) on its ``crash_at``-th clip, once per ``marker`` file."""

    def __init__(self, marker: str, crash_at: int = 3):
        self.marker, self.crash_at, self.calls = Path(marker), crash_at, 0

    def __call__(self, audio):
        self.calls += 1
        if self.calls == self.crash_at and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().__call__(audio)
