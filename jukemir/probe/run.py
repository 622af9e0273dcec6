"""A trained probe, and its run folder: save, load, and whether a config's run is finished.

A run folder (``probes/<dataset>/<representation>/<uid>/``, :meth:`jukemir.cache.Layout.run`)
holds :data:`RUN_FILES`, written in that order; ``metrics.json``, written last,
marks it finished.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..cache import Layout, check_name
from ..datasets import SPLITS, DatasetSpec, get_dataset
from ..device import torch_device
from ..errors import NotFoundError, UserError, one_line
from ..io import FileLock, atomic_write, read_json, remove_stale_temporaries, write_json
from .config import ProbeConfig
from .data import ProbeData
from .metrics import compute_metrics
from .model import SimpleMLP
from .scaler import Scaler

RUN_FILES = ("cfg.json", "scaler.npz", "probe.pt", "train.json", "metrics.json")  # metrics.json last: "done"


class Probe:
    """A trained probe: its config, the scaler fitted on the training split, and the model.

    ``info`` records how training went (steps, best step, what stopped it, ...).
    """

    def __init__(self, cfg, spec: DatasetSpec, scaler: Scaler, model: SimpleMLP, info: dict | None = None):
        self.cfg = ProbeConfig(cfg)
        self.spec = spec
        self.scaler = scaler
        self.model = model.eval()
        self.info = dict(info or {})

    @property
    def uid(self) -> str:
        return self.cfg.uid()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, X: np.ndarray) -> torch.Tensor:
        """Outputs for raw features ``X`` ``(N, D)``: float32 ``(N, K)`` on the model's device."""
        Xs = self.scaler.transform(X)
        bs = self.cfg["batch_size"]
        with torch.no_grad():
            chunks = [
                self.model(torch.as_tensor(Xs[i : i + bs], device=self.device)) for i in range(0, len(Xs), bs)
            ]
        return torch.cat(chunks)

    def evaluate(self, data: ProbeData, split: str = "valid") -> dict:
        """All metrics of the task on ``split`` (plus ``loss`` and ``primary``), as Python floats."""
        if split not in SPLITS:
            raise UserError(f"split must be one of {SPLITS}, got {split!r}")
        choose_on = self.evaluate(data, "valid") if data.spec.key_clips and split != "valid" else None
        return compute_metrics(
            data.spec, self.logits(data.X[split]), data.targets[split], data.uids[split], choose_on=choose_on
        )

    def save(self, data: ProbeData, layout: Layout | None = None, metrics: dict | None = None) -> Path:
        """Write the run folder ``probes/<dataset>/<representation>/<uid>/`` of ``layout`` (default:
        ``Layout()``): cfg.json, scaler.npz, probe.pt, train.json (with ``features``: the data's
        :attr:`~jukemir.probe.data.ProbeData.fingerprint`) and, last, metrics.json (the validation
        metrics, as the original). Returns the folder.
        """
        folder = (layout or Layout()).run(self.cfg)
        metrics = metrics if metrics is not None else self.evaluate(data, "valid")
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, buf)
        info = dict(self.info, features=data.fingerprint)
        if data.nonfinite is not None:
            info["nonfinite"] = data.nonfinite.to_json()
        with FileLock(
            folder / ".lock"
        ):  # savers of one run take turns, so temporaries seen here are a dead one's
            remove_stale_temporaries(folder, older_than_s=0)
            (folder / "metrics.json").unlink(
                missing_ok=True
            )  # an overwritten run is unfinished until the end
            write_json(folder / "cfg.json", dict(self.cfg))
            with atomic_write(folder / "scaler.npz") as handle:
                handle.write(self.scaler.to_bytes())
            with atomic_write(folder / "probe.pt") as handle:
                handle.write(buf.getvalue())
            write_json(folder / "train.json", info)
            write_json(folder / "metrics.json", metrics)
        return folder


def load_probe(
    dataset: str, representation: str, uid: str, layout: Layout | None = None, device=None
) -> Probe:
    """Load the run ``probes/<dataset>/<representation>/<uid>/`` of ``layout`` saved by :meth:`Probe.save`."""
    layout = layout or Layout()
    folder = layout.probes(dataset, representation) / check_name(uid, "run uid")
    return load_probe_dir(folder, device=device, layout=layout)


def load_probe_dir(folder: str | Path, device=None, layout: Layout | None = None) -> Probe:
    """Load a run folder (see :meth:`Probe.save`); an imported dataset's spec is read from ``layout``."""
    folder = Path(folder)
    for name in ("cfg.json", "scaler.npz", "probe.pt"):
        if not (folder / name).is_file():
            raise NotFoundError(f"{folder / name}: missing; not a finished probe run")
    try:
        cfg = ProbeConfig(read_json(folder / "cfg.json"))
    except UserError as exc:
        raise UserError(exc if str(folder) in str(exc) else f"{folder / 'cfg.json'}: {exc}") from None
    spec = get_dataset(cfg["dataset"], layout)
    try:
        state = torch.load(folder / "probe.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        raise UserError(
            f"{folder / 'probe.pt'}: not a readable probe ({type(exc).__name__}: {one_line(exc)})"
        ) from None
    first = "hidden_0.weight" if cfg["hidden_layer_sizes"] else "output.weight"
    if not isinstance(state, dict) or first not in state or getattr(state[first], "ndim", 0) != 2:
        raise UserError(f"{folder / 'probe.pt'}: no {first!r} matrix; not a probe of config {cfg.uid()}")
    model = SimpleMLP(
        state[first].shape[1],
        cfg["hidden_layer_sizes"],
        spec.num_outputs,
        dropout_input=cfg["dropout_input"],
        dropout_p=cfg["dropout_p"],
    )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise UserError(
            f"{folder / 'probe.pt'}: does not fit config {cfg.uid()} ({one_line(exc)[:300]})"
        ) from None
    info = read_json(folder / "train.json") if (folder / "train.json").is_file() else {}
    if not isinstance(info, dict):
        raise UserError(f"{folder / 'train.json'}: expected a JSON object")
    scaler = Scaler.from_file(folder / "scaler.npz", state[first].shape[1])
    return Probe(cfg, spec, scaler, model.to(torch_device(device)), info)


def run_is_done(cfg, layout: Layout | None = None, features: str | None = None) -> bool:
    """Whether the run folder of ``cfg`` already holds its metrics.json, and, given the data's
    ``features`` fingerprint, was trained on that data (a run that records none, e.g. the
    original's, is taken as done)."""
    folder = (layout or Layout()).run(ProbeConfig(cfg))
    if not (folder / "metrics.json").is_file():
        return False
    return features is None or run_features(folder) in (None, features)


def run_features(folder: str | Path) -> str | None:
    """The data fingerprint a saved run was trained on (None: not recorded); "" if train.json is
    unreadable."""
    try:
        info = read_json(Path(folder) / "train.json")
    except (OSError, ValueError):
        return ""
    return info.get("features") if isinstance(info, dict) else ""
