"""chroma-stats: the mean and standard deviation over time of a 12-bin chroma (a jukemir plugin).

Per clip: mono audio at 22,050 Hz -> ``librosa.feature.chroma_stft`` (``n_fft``
2048, hop ``hop_length``, A440 tuning) -> ``[mean over frames, std over frames]``,
24 float32 values.
"""

import numpy as np

from jukemir.representations import Representation


class ChromaStats(Representation):
    """Build once, then ``rep(audio) -> (24,)`` float32 (see the module docstring).

    Args:
        hop_length: STFT hop in samples (an option: it changes the output, so it is
            returned by :meth:`options` and recorded in each output's provenance).
    """

    name = "chroma-stats"  # the name jukemir uses when the class is named as module:Class
    version = "1"  # bump when the features a given input produces change
    sample_rate = 22050  # jukemir decodes and resamples every file to this rate
    dim = 24

    def __init__(self, hop_length: int = 512):
        if hop_length < 1:
            raise ValueError(f"hop_length must be >= 1, got {hop_length}")
        self.hop_length = int(hop_length)
        # load weights here, once (a learned model would read its checkpoint now)

    def options(self) -> dict:
        return {"hop_length": self.hop_length}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import librosa

        chroma = librosa.feature.chroma_stft(
            y=audio, sr=self.sample_rate, hop_length=self.hop_length, tuning=0.0
        )
        return np.concatenate([chroma.mean(axis=1), chroma.std(axis=1)]).astype(np.float32)
