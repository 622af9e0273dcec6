"""THE device helper: which torch device a model or a probe runs on.

Every representation and the probe trainer call :func:`torch_device` with the
user's ``--device`` (or ``None``), so a device that does not exist is one
clear error everywhere, before any weights are loaded.
"""

from __future__ import annotations

import contextlib

from .errors import DeviceError


def torch_device(device=None):
    """The ``torch.device`` to use: ``device`` checked, or ``cuda`` when available, else ``cpu``.

    Args:
        device: ``None``/``""`` (choose), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``, or a ``torch.device``.
    Raises:
        DeviceError: a name torch does not know, CUDA asked for on a build of
            torch without CUDA or on a machine without a GPU, a GPU index past
            the last GPU, or MPS where it is not available.
    """
    import torch

    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {device!r}: not a torch device (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise DeviceError(
                f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; use --device cpu, "
                "or install a CUDA build of torch (https://pytorch.org/get-started/locally/)"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"--device {device}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise DeviceError(f"--device {device}: jukemir runs on cpu, cuda or mps, not {dev.type}")
    return dev


# Below this many multiply-adds per step, more CPU threads only add synchronisation (and, with the
# cores busy elsewhere, waiting: see OMP_WAIT_POLICY in jukemir/__init__.py).
SMALL_STEP_MACS = 16_000_000


@contextlib.contextmanager
def cpu_threads_for(device, macs_per_step: float):
    """Run a loop of small CPU steps on one thread, restoring torch's thread count afterwards.

    ``macs_per_step``: multiply-adds of one step (e.g. one stacked probe
    update). Steps smaller than :data:`SMALL_STEP_MACS` gain nothing from
    torch's intra-op threads and lose a lot when the cores are shared. On a
    GPU, or for larger steps, nothing changes.
    """
    import torch

    small = getattr(device, "type", str(device)) == "cpu" and macs_per_step < SMALL_STEP_MACS
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small and before > 1:
            torch.set_num_threads(before)
