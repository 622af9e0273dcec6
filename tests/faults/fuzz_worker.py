"""``python -m faults.fuzz_worker LIST``: load every file named in LIST with THE audio loader.

LIST names one path a line.

Prints ``BEGIN <i>`` before each file (flushed, so the parent can name a file
that hangs or crashes the process), then one of ``OK <i> <samples>``,
``AUDIOERROR <i> <message>`` or ``OTHER <i> <exception type>: <message>``, or
``BADAUDIO <i> <what>`` when the loader returned audio that breaks its contract.
"""

import sys

import numpy as np

from jukemir.audio import AudioError, load_audio


def check(path: str) -> str:
    try:
        audio = load_audio(path, None, normalize=True)
    except AudioError as exc:
        message = str(exc)
        if "\n" in message or not message.startswith(f"{path}: "):
            return f"OTHER AudioError not one line naming the file: {message!r}"
        return "AUDIOERROR " + message[len(path) + 2 :]
    except BaseException as exc:  # noqa: BLE001 - the point is to see it
        return f"OTHER {type(exc).__name__}: {' '.join(str(exc).split())}"
    if not (isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1 and audio.size):
        return f"BADAUDIO {type(audio).__name__} {getattr(audio, 'dtype', '')} {getattr(audio, 'shape', '')}"
    if not np.isfinite(audio).all() or np.abs(audio).max() > 1.0:
        return "BADAUDIO non-finite or beyond [-1, 1] after peak normalisation"
    return f"OK {audio.size}"


for i, line in enumerate(open(sys.argv[1]).read().splitlines()):
    print(f"BEGIN {i}", flush=True)
    result = check(line)
    kind, _, rest = result.partition(" ")
    print(f"{kind} {i} {rest}", flush=True)
