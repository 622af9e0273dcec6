"""Training probes: data loading, the original's training loop, and a vectorised grid trainer.

Data (docs/probes.md): ``processed/<dataset>/meta.json`` names the items and
their splits; ``representations/<dataset>/<representation>/<uid>.npy`` holds
one 1-D feature vector per item. Each split is ordered as the original did:
sorted uids, then ``random.seed(seed); random.shuffle(uids)``.

Training (docs/probes.md), for every config: seed Python's ``random`` and
torch, build :class:`~jukemir.probe.model.SimpleMLP`, Adam with coupled L2,
z-score features with training statistics, then loop: stop if past
``max_num_epochs`` (keeping the current weights); every
``early_stopping_eval_frequency`` steps, stop if the validation score has not
improved for ``early_stopping_boredom`` evaluations (restoring the best
weights), else evaluate; then one minibatch update drawn with
``random.sample``.

:func:`train_probe` runs that loop for one config. :func:`train_probes` runs
many configs at once: configs sharing an architecture, batch size and seed
are trained together as stacked tensors (batched matrix products), each with
its own learning rate, weight decay, dropout and standardisation, and each
stopping on its own; a stopped config is frozen and dropped from the stack.
Within such a group the original draws the same minibatches and the same
dropout noise for every config (same seed, same RNG calls), so the grouped
trainer shares them too: it draws the same minibatches and initial weights
as the original, and its dropout masks come from its own generator (the same
distribution, not the same numbers). ``precision="bf16"`` computes the
first-layer products in bfloat16 (float32 accumulation, master weights and
Adam); on CPU its stacks are split to stay in the caches.

:func:`train_grid` trains the configs of one dataset x representation that
have no finished run yet and saves each run as soon as it stops.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import cache
from ..datasets import SPLITS, DatasetSpec, get_dataset, load_meta, meta_path
from ..device import cpu_threads_for, torch_device
from ..errors import NotFoundError, UserError
from ..io import FileLock, atomic_write, load_npy, read_json, remove_stale_temporaries, write_json
from .config import ProbeConfig
from .metrics import compute_metrics, loss_gradient
from .model import SimpleMLP, initial_state

NONFINITE_POLICIES = ("replace", "error")
# Arithmetic of the vectorised trainer's first-layer products (the bulk of the work): "fp32" as the
# original; "bf16": bfloat16 inputs and weights with float32 accumulation, master weights, Adam state
# and everything after the first product (tensor cores on GPUs, AMX on recent Xeons).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Largest stack trained at once on a CPU in bf16 (in parameters). The bf16 copies of a stack's
# first-layer weights and gradients are made every step; for more than a few 4,800 x 512 MLPs they no
# longer stay in the CPU's caches and the copies cost more than the batching saves (measured: 4.6 vs
# 6.5 ms per config and update at batch 64). fp32 stacks and GPU stacks are not split.
CPU_STACK_PARAMS = 8_000_000
RUN_FILES = ("cfg.json", "scaler.npz", "probe.pt", "train.json", "metrics.json")  # metrics.json last: "done"


# ---------------------------------------------------------------- data
@dataclass
class NonfiniteReport:
    """What was non-finite in a dataset x representation's features, and what was done."""

    files: int  # feature files with at least one NaN/inf
    total_files: int
    dims: int  # feature dimensions with at least one NaN/inf
    total_dims: int
    nan: int
    posinf: int
    neginf: int
    empty_dims: int  # dimensions with no finite training value (set to 0)
    policy: str

    def summary(self, dataset: str, representation: str) -> str:
        """One line for humans."""
        line = (
            f"jukemir probe: warning: {dataset}/{representation}: {self.files} of {self.total_files} feature files "
            f"have non-finite values ({self.nan} NaN, {self.posinf} +inf, {self.neginf} -inf in {self.dims} of "
            f"{self.total_dims} dims); replaced +/-inf by the training split's per-dimension finite max/min and "
            f"NaN by its finite mean"
        )
        if self.empty_dims:
            line += f" ({self.empty_dims} dims with no finite training value set to 0)"
        return line

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ProbeData:
    """The features and targets of one dataset x representation, split and ordered.

    Attributes:
        uids: split -> uids in the original's order for :attr:`seed`.
        X: split -> float32 ``(N, D)`` features, rows in ``uids`` order.
        targets: split -> encoded targets (see :func:`encode_targets`).
        feature_dir: the folder the features came from.
        nonfinite: what non-finite values were found and replaced (``None``: none).
    """

    dataset: str
    representation: str
    spec: DatasetSpec
    seed: int | None
    uids: dict
    X: dict
    targets: dict
    feature_dir: Path
    nonfinite: NonfiniteReport | None = None

    @property
    def num_features(self) -> int:
        return self.X["train"].shape[1]

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 of what probes see: each split's uids, features and targets in sorted-uid order
        (so the same for every seed). Saved with each run: a run of other features is stale."""
        h = hashlib.sha256()
        for split in SPLITS:
            order = sorted(range(len(self.uids[split])), key=self.uids[split].__getitem__)
            h.update("\n".join(self.uids[split][i] for i in order).encode("utf-8"))
            h.update(np.ascontiguousarray(self.X[split][order]).tobytes())
            h.update(np.ascontiguousarray(self.targets[split][order]).tobytes())
        return h.hexdigest()

    def order(self, split: str, seed: int | None) -> np.ndarray:
        """Row indices putting ``split`` in the original's order for ``seed``."""
        if seed is not None and seed == self.seed:
            return np.arange(len(self.uids[split]))
        row = {uid: i for i, uid in enumerate(self.uids[split])}
        return np.array([row[uid] for uid in original_order(sorted(self.uids[split]), seed)], dtype=np.int64)

    def reordered(self, seed: int | None) -> "ProbeData":
        """The same data in the original's order for another ``seed``."""
        if seed is not None and seed == self.seed:
            return self
        orders = {s: self.order(s, seed) for s in SPLITS}
        return ProbeData(
            self.dataset, self.representation, self.spec, seed,
            {s: [self.uids[s][i] for i in o] for s, o in orders.items()},
            {s: self.X[s][o] for s, o in orders.items()},
            {s: self.targets[s][o] for s, o in orders.items()},
            self.feature_dir, self.nonfinite,
        )  # fmt: skip


def original_order(sorted_uids: Sequence[str], seed: int | None) -> list[str]:
    """The original's split order: ``random.seed(seed); random.shuffle(uids)`` (seed None: unseeded)."""
    uids = list(sorted_uids)
    (random.Random(seed).shuffle if seed is not None else random.shuffle)(uids)
    return uids


def encode_targets(spec: DatasetSpec, ys: Sequence, uids: Sequence[str], where) -> np.ndarray:
    """Raw ``y`` values of meta.json -> targets.

    multiclass: int64 ``(N,)`` class ids; multilabel: uint8 ``(N, K)``
    multi-hot (an empty list is all zeros); regression: float32 ``(N, K)``.
    A label that is not in the dataset's label list is an error naming ``where``.
    """
    if spec.task == "regression":
        try:
            out = np.array(ys, dtype=np.float32).reshape(len(ys), -1)
        except (TypeError, ValueError):
            raise UserError(f"{where}: regression targets must be lists of {spec.num_outputs} numbers") from None
        if out.shape[1] != spec.num_outputs:
            raise UserError(f"{where}: regression targets have {out.shape[1]} values, {spec.name} needs {spec.num_outputs}")
        return out
    index = {label: i for i, label in enumerate(spec.labels)}

    def lookup(uid, label):
        if label not in index:
            raise UserError(f"{where}: item {uid!r} has label {label!r}, not one of the {len(index)} labels of {spec.name}")
        return index[label]

    if spec.task == "multiclass":
        return np.array([lookup(uid, y) for uid, y in zip(uids, ys)], dtype=np.int64)
    out = np.zeros((len(ys), spec.num_outputs), dtype=np.uint8)
    for i, (uid, tags) in enumerate(zip(uids, ys)):
        if not isinstance(tags, list):
            raise UserError(f"{where}: item {uid!r} of multilabel {spec.name} has y={tags!r}, expected a list of tags")
        for tag in tags:
            out[i, lookup(uid, tag)] = 1
    return out


def load_probe_data(
    dataset: str,
    representation: str,
    seed: int | None = 0,
    nonfinite: str = "replace",
    processed_root: str | Path | None = None,
    representations_root: str | Path | None = None,
    verbose: bool = True,
) -> ProbeData:
    """Load the train/valid/test features and targets of ``dataset`` x ``representation``.

    Args:
        seed: orders each split as the original does for this seed.
        nonfinite: ``"replace"`` (default): +inf/-inf become the training
            split's per-dimension finite max/min and NaN its finite mean (a
            dimension with no finite training value becomes 0), with a one-line
            warning on stderr; ``"error"``: refuse, naming the first bad file.
        processed_root, representations_root: override the cache folders.
        verbose: print the non-finite warning.

    Raises ``FileNotFoundError`` for a missing meta.json, feature folder or
    feature file, and ``ValueError`` for a feature of the wrong shape, an
    unknown label or an empty split; each names the file.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise UserError(f"nonfinite policy must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    spec = get_dataset(dataset, processed_root)
    meta = load_meta(dataset, processed_root)
    where = meta_path(dataset, processed_root)
    if representations_root is None:
        feature_dir = cache.representations_dir(dataset, representation, create=False)
    else:
        feature_dir = Path(representations_root) / dataset / representation
    if not feature_dir.is_dir():
        raise NotFoundError(f"{feature_dir}: no features of {dataset}/{representation}; run `jukemir extract` first")

    by_split = {s: sorted(uid for uid, rec in meta.items() if rec.get("split") == s) for s in SPLITS}
    for split, uids in by_split.items():
        if not uids:
            raise UserError(f"{where}: the {split} split is empty")
        by_split[split] = original_order(uids, seed)
    paths = {s: [feature_dir / f"{uid}.npy" for uid in uids] for s, uids in by_split.items()}
    missing = [(s, p) for s in SPLITS for p in paths[s] if not p.is_file()]
    if missing:
        split, first = missing[0]
        total = sum(len(u) for u in by_split.values())
        raise NotFoundError(
            f"{first}: missing feature of {split} item {first.stem!r} listed in {where} "
            f"({len(missing)} of {total} items missing; does meta.json match the features?)"
        )

    first_path = paths["train"][0]
    dim = None
    X = {}
    for split in SPLITS:
        rows = []
        for path in paths[split]:
            try:
                x = load_npy(path)
            except (OSError, ValueError) as exc:
                raise UserError(f"{path}: cannot read feature file ({exc})") from None
            if x.ndim != 1 or not np.issubdtype(x.dtype, np.number):
                raise UserError(f"{path}: feature has shape {x.shape} ({x.dtype}), expected a 1-D vector of numbers")
            dim = x.shape[0] if dim is None else dim
            if x.shape[0] != dim:
                raise UserError(f"{path}: feature has {x.shape[0]} dims, {first_path} has {dim}")
            rows.append(x)
        X[split] = np.asarray(rows, dtype=np.float32)

    report = _handle_nonfinite(X, paths, nonfinite)
    if report is not None and verbose:
        print(report.summary(dataset, representation), file=sys.stderr)
    targets = {s: encode_targets(spec, [meta[u]["y"] for u in by_split[s]], by_split[s], where) for s in SPLITS}
    return ProbeData(dataset, representation, spec, seed, by_split, X, targets, feature_dir, report)


def _handle_nonfinite(X: dict, paths: dict, policy: str) -> NonfiniteReport | None:
    bad = {s: ~np.isfinite(X[s]) for s in SPLITS}
    if not any(b.any() for b in bad.values()):
        return None
    if policy == "error":
        path, count = min((paths[s][r], int(bad[s][r].sum())) for s in SPLITS for r in np.flatnonzero(bad[s].any(1)))
        raise UserError(f"{path}: {count} non-finite feature values (NaN/inf); "
                         f"use the 'replace' non-finite policy to replace them")  # fmt: skip
    train = X["train"]
    finite = np.isfinite(train)
    empty = ~finite.any(0)
    hi = np.where(finite, train, -np.inf).max(0)
    lo = np.where(finite, train, np.inf).min(0)
    mean = np.where(finite, train, 0).sum(0, dtype=np.float64) / np.maximum(finite.sum(0), 1)
    hi[empty], lo[empty], mean[empty] = 0, 0, 0
    counts = dict(nan=0, posinf=0, neginf=0)
    for s in SPLITS:
        x = X[s]
        counts["nan"] += int(np.isnan(x).sum())
        counts["posinf"] += int(np.isposinf(x).sum())
        counts["neginf"] += int(np.isneginf(x).sum())
        X[s] = np.where(np.isnan(x), mean.astype(np.float32), np.where(np.isposinf(x), hi, np.where(np.isneginf(x), lo, x)))
        X[s] = X[s].astype(np.float32, copy=False)
    any_dim = np.zeros(train.shape[1], dtype=bool)
    for b in bad.values():
        any_dim |= b.any(0)
    return NonfiniteReport(
        files=int(sum(b.any(1).sum() for b in bad.values())),
        total_files=sum(len(b) for b in bad.values()),
        dims=int(any_dim.sum()),
        total_dims=train.shape[1],
        empty_dims=int(empty.sum()),
        policy=policy,
        **counts,
    )


# ---------------------------------------------------------------- standardisation
@dataclass
class Scaler:
    """z-scoring with training statistics, as sklearn's ``StandardScaler(with_mean=f, with_std=f)``.

    ``mean`` and ``scale`` are float64 ``(D,)`` (``None`` when not
    standardising); a (near-)constant feature gets scale 1, as in sklearn.
    """

    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(cls, X: np.ndarray, standardize: bool) -> "Scaler":
        """Fit on training features ``X`` ``(N, D)`` (float64 accumulation)."""
        if not standardize:
            return cls()
        n = X.shape[0]
        mean = X.sum(0, dtype=np.float64) / n
        var = np.square(X - mean).sum(0) / n
        eps = np.finfo(np.float64).eps
        scale = np.sqrt(var)
        scale[var <= n * eps * var + (n * mean * eps) ** 2] = 1.0
        return cls(mean, scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` as float32 ``(N, D)``.

        Computed as the sklearn of the original's time did: in place on a
        float32 copy with float64 statistics (recent sklearn first rounds the
        statistics to float32, which differs by float32 rounding).
        """
        out = np.array(X, dtype=np.float32)
        if self.mean is not None:
            out -= self.mean
            out /= self.scale
        return out

    def to_bytes(self) -> bytes:
        """The ``.npz`` serialisation (no pickle)."""
        buf = io.BytesIO()
        standardize = self.mean is not None
        empty = np.zeros(0)
        np.savez(buf, standardize=np.array(standardize),
                 mean=self.mean if standardize else empty, scale=self.scale if standardize else empty)  # fmt: skip
        return buf.getvalue()

    @classmethod
    def from_file(cls, path) -> "Scaler":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["scale"]) if bool(z["standardize"]) else cls()


# ---------------------------------------------------------------- a trained probe
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
            chunks = [self.model(torch.as_tensor(Xs[i : i + bs], device=self.device)) for i in range(0, len(Xs), bs)]
        return torch.cat(chunks)

    def evaluate(self, data: ProbeData, split: str = "valid") -> dict:
        """All metrics of the task on ``split`` (plus ``loss`` and ``primary``), as Python floats."""
        if split not in SPLITS:
            raise UserError(f"split must be one of {SPLITS}, got {split!r}")
        choose_on = self.evaluate(data, "valid") if data.spec.key_clips and split != "valid" else None
        return compute_metrics(data.spec, self.logits(data.X[split]), data.targets[split], data.uids[split],
                               choose_on=choose_on)  # fmt: skip

    def run_dir(self, root: str | Path | None = None) -> Path:
        root = Path(root) if root is not None else cache.probes_dir(create=False)
        return root / self.cfg["dataset"] / self.cfg["representation"] / self.uid

    def save(self, data: ProbeData, root: str | Path | None = None, metrics: dict | None = None) -> Path:
        """Write ``<root>/<dataset>/<representation>/<uid>/``: cfg.json, scaler.npz, probe.pt,
        train.json (with ``features``: the data's :attr:`ProbeData.fingerprint`) and, last,
        metrics.json (the validation metrics, as the original).

        ``root`` defaults to the cache's ``probes/``. Returns the folder.
        """
        folder = self.run_dir(root)
        metrics = metrics if metrics is not None else self.evaluate(data, "valid")
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, buf)
        info = dict(self.info, features=data.fingerprint)
        if data.nonfinite is not None:
            info["nonfinite"] = data.nonfinite.to_json()
        with FileLock(folder / ".lock"):  # savers of one run take turns, so temporaries seen here are a dead one's
            remove_stale_temporaries(folder, older_than_s=0)
            (folder / "metrics.json").unlink(missing_ok=True)  # an overwritten run is unfinished until the end
            write_json(folder / "cfg.json", dict(self.cfg))
            with atomic_write(folder / "scaler.npz") as handle:
                handle.write(self.scaler.to_bytes())
            with atomic_write(folder / "probe.pt") as handle:
                handle.write(buf.getvalue())
            write_json(folder / "train.json", info)
            write_json(folder / "metrics.json", metrics)
        return folder


def load_probe(dataset: str, representation: str, uid: str, root: str | Path | None = None,
               device=None) -> Probe:  # fmt: skip
    """Load the run ``<root>/<dataset>/<representation>/<uid>/`` saved by :meth:`Probe.save`."""
    root = Path(root) if root is not None else cache.probes_dir(create=False)
    return load_probe_dir(root / dataset / representation / uid, device=device)


def load_probe_dir(folder: str | Path, device=None) -> Probe:
    """Load a run folder (see :meth:`Probe.save`)."""
    folder = Path(folder)
    for name in ("cfg.json", "scaler.npz", "probe.pt"):
        if not (folder / name).is_file():
            raise NotFoundError(f"{folder / name}: missing; not a finished probe run")
    cfg = ProbeConfig(read_json(folder / "cfg.json"))
    spec = get_dataset(cfg["dataset"])
    state = torch.load(folder / "probe.pt", map_location="cpu", weights_only=True)
    first = "hidden_0.weight" if cfg["hidden_layer_sizes"] else "output.weight"
    if first not in state:
        raise UserError(f"{folder / 'probe.pt'}: no {first!r}; not a probe of config {cfg.uid()}")
    model = SimpleMLP(state[first].shape[1], cfg["hidden_layer_sizes"], spec.num_outputs,
                      dropout_input=cfg["dropout_input"], dropout_p=cfg["dropout_p"])  # fmt: skip
    model.load_state_dict(state)
    info = read_json(folder / "train.json") if (folder / "train.json").is_file() else {}
    return Probe(cfg, spec, Scaler.from_file(folder / "scaler.npz"), model.to(torch_device(device)), info)


# ---------------------------------------------------------------- the original's loop, one config
def _termination_check(cfg) -> None:
    if not cfg["early_stopping"] and cfg["max_num_epochs"] is None:
        raise UserError(f"config {cfg.uid()}: No termination criteria specified (early_stopping or max_num_epochs)")


def _score_of(cfg, metrics: dict, where: str) -> float:
    name = cfg["early_stopping_metric"]
    score = -metrics[name[1:]] if name.startswith("-") else metrics[name]
    if np.isnan(score):
        raise FloatingPointError(f"{where}: validation {name} is NaN")
    return float(score)


def _loss(task: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "multiclass":
        return F.cross_entropy(logits, y)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.mse_loss(logits, y)


def train_probe(cfg, data: ProbeData, device=None) -> Probe:
    """Train one probe exactly as the original's ``ProbeExperiment.train`` (docs/probes.md).

    Seeds Python's ``random`` stream and torch's global RNG with the config's
    seed, so on the original's device type the run matches it step for step.
    ``data`` is reordered to the config's seed if needed. Returns the trained
    :class:`Probe` (best weights restored when early stopping ended the run).
    """
    cfg = ProbeConfig(cfg)
    _termination_check(cfg)
    seed = cfg["seed"]
    data = data.reordered(seed)
    device = torch_device(device)
    start = time.time()
    rng = random.Random(seed) if seed is not None else random.Random()
    if seed is not None:
        torch.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
    spec = data.spec
    model = SimpleMLP(data.num_features, cfg["hidden_layer_sizes"], spec.num_outputs,
                      dropout_input=cfg["dropout_input"], dropout_p=cfg["dropout_p"]).to(device)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["l2_weight_decay"] or 0)
    scaler = Scaler.fit(data.X["train"], cfg["data_standardization"])
    X_train = torch.as_tensor(scaler.transform(data.X["train"]), device=device)  # row-wise, so = per batch
    y_train = torch.as_tensor(data.targets["train"], device=device)
    n = X_train.shape[0]
    probe = Probe(cfg, spec, scaler, model)  # evaluates in eval mode; training switches back
    model.train()
    metric = cfg["early_stopping_metric"].lstrip("-")

    step, best, boredom, best_state, best_step = 0, float("-inf"), 0, None, None
    curve = []  # [step, validation score] at each evaluation: the report plots it
    stopped_by = "early_stopping"
    with cpu_threads_for(device, _macs_per_update(cfg, data)):
        while True:
            epoch = step * cfg["batch_size"] / n
            if cfg["max_num_epochs"] is not None and epoch > cfg["max_num_epochs"]:
                stopped_by = "max_num_epochs"
                break
            if cfg["early_stopping"] and step % cfg["early_stopping_eval_frequency"] == 0:
                if boredom >= cfg["early_stopping_boredom"]:
                    if best_state is not None:
                        model.load_state_dict(best_state)
                    break
                model.eval()
                metrics = compute_metrics(spec, probe.logits(data.X["valid"]), data.targets["valid"],
                                          data.uids["valid"], names=[metric])  # fmt: skip
                model.train()
                score = _score_of(cfg, metrics, f"{data.dataset}/{data.representation} {cfg.uid()} step {step}")
                curve.append([step, score])
                if score > best:
                    best, boredom, best_step = score, 0, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    boredom += 1
            idxs = rng.sample(range(n), min(cfg["batch_size"], n))
            loss = _loss(spec.task, model(X_train[idxs]), y_train[idxs])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    model.eval()
    probe.info = _info("serial", device, step, best_step, best, stopped_by, time.time() - start, valid_curve=curve)
    return probe


def _info(trainer, device, steps, best_step, best_score, stopped_by, seconds, **extra) -> dict:
    return dict(trainer=trainer, device=str(device), steps=steps, best_step=best_step,
                best_score=None if best_step is None else best_score, stopped_by=stopped_by,
                seconds=round(seconds, 3), **extra)  # fmt: skip


# ---------------------------------------------------------------- many configs at once
def group_key(cfg) -> tuple:
    """Configs with the same key share initial weights, minibatches and dropout noise (and a stack)."""
    return (tuple(cfg["hidden_layer_sizes"]), cfg["batch_size"], cfg["seed"])


def plan_groups(cfgs: Sequence) -> list[list[int]]:
    """Indices of ``cfgs`` grouped by :func:`group_key`, in first-seen order."""
    groups: dict = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(group_key(cfg), []).append(i)
    return list(groups.values())


class _Features:
    """Feature matrices per (standardise?, split) on the device, built once and shared by all groups."""

    def __init__(self, data: ProbeData, device: torch.device):
        self.data, self.device = data, device
        self.scalers: dict = {}
        self._X: dict = {}

    def scaler(self, standardize: bool) -> Scaler:
        if standardize not in self.scalers:
            self.scalers[standardize] = Scaler.fit(self.data.X["train"], standardize)
        return self.scalers[standardize]

    def X(self, standardize: bool, split: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (standardize, split, dtype)
        if key not in self._X:
            if dtype != torch.float32:
                self._X[key] = self.X(standardize, split).to(dtype)
            else:
                raw = self.data.X[split]
                X = self.scaler(True).transform(raw) if standardize else raw
                self._X[key] = torch.as_tensor(X, device=self.device)
        return self._X[key]


# torch.optim.Adam's defaults, as the original used them (docs/probes.md), in the fused kernel's terms
_ADAM = dict(beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=False, maximize=False)


class _StackAdam:
    """Adam with coupled L2 (torch's defaults: betas 0.9, 0.999; eps 1e-8) over per-config parameter views.

    Each update is one call per (learning rate, weight decay) of the fused
    kernel that ``torch.optim.Adam(fused=True)`` calls, with the same
    arguments, so the arithmetic is the same; what it leaves out is the
    optimizer's per-update Python (state lookups, grouping, one step counter
    per tensor), which costs more than the kernels for stacks of small
    probes. All configs of a stack have taken the same number of updates, so
    they share one step counter. ``state`` maps each parameter to
    ``{"step", "exp_avg", "exp_avg_sq"}`` as torch's Adam does.
    """

    def __init__(self, groups: dict, old=None):
        carried = dict(old or [])
        steps = {float(state["step"]) for state in carried.values()}
        if len(steps) > 1:
            raise ValueError(f"configs of one stack at different steps: {sorted(steps)}")
        first = next(iter(groups.values()))[0]
        self.step_count = torch.tensor(steps.pop() if steps else 0.0, dtype=torch.float32, device=first.device)
        self.state: dict = {}
        self.groups = []
        for (lr, wd), params in groups.items():
            m, v = [], []
            for p in params:
                old_state = carried.get(p)
                m.append(old_state["exp_avg"] if old_state else torch.zeros_like(p))
                v.append(old_state["exp_avg_sq"] if old_state else torch.zeros_like(p))
                self.state[p] = {"step": self.step_count, "exp_avg": m[-1], "exp_avg_sq": v[-1]}
            self.groups.append((lr, wd, params, [p.grad for p in params], m, v, [self.step_count] * len(params)))

    def step(self) -> None:
        self.step_count += 1
        for lr, wd, params, grads, m, v, steps in self.groups:
            torch._fused_adam_(params, grads, m, v, [], steps, lr=lr, weight_decay=wd, **_ADAM)


def _make_adam(views: list[list[torch.Tensor]], cfgs: list, old=None):
    """Adam over per-config parameter views, one group per (lr, weight decay): :class:`_StackAdam`
    where the fused kernel exists for the device, else ``torch.optim.Adam``."""
    groups: dict = {}
    for params, cfg in zip(views, cfgs):
        key = (cfg["learning_rate"], cfg["l2_weight_decay"] or 0)
        groups.setdefault(key, []).extend(params)
    if _has_fused_adam(views[0][0].device):
        return _StackAdam(groups, old)
    opt = torch.optim.Adam([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()])
    for new_param, state in old or []:
        opt.state[new_param] = state
    return opt


@functools.lru_cache(maxsize=None)
def _has_fused_adam(device: torch.device) -> bool:
    """Whether torch's fused Adam kernel runs on ``device`` (tried once on a tiny tensor)."""
    try:
        p = torch.zeros(2, device=device)
        torch._fused_adam_([p], [torch.ones_like(p)], [torch.zeros_like(p)], [torch.zeros_like(p)], [],
                           [torch.ones((), device=device)], lr=1e-3, weight_decay=0.0, **_ADAM)  # fmt: skip
        return True
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class _Group:
    """Configs sharing :func:`group_key`, trained as one stack of probes.

    Stack tensors: ``W[l]`` ``(C, d_l, d_{l+1})`` (a Linear's weight,
    transposed) and ``b[l]`` ``(C, d_{l+1})``. Configs are ordered by input
    variant (standardised?, input dropout) so each variant is a contiguous
    block whose first layer is one broadcast matrix product.
    """

    def __init__(self, cfgs: list, data: ProbeData, feats: _Features, device: torch.device,
                 precision: str = "fp32"):  # fmt: skip
        self.cfgs = cfgs
        self.uids = [cfg.uid() for cfg in cfgs]
        self.precision = precision
        self.cdtype = PRECISIONS[precision]
        self.data, self.feats, self.device = data, feats, device
        first = cfgs[0]
        self.hidden = list(first["hidden_layer_sizes"])
        self.batch_size, self.seed = first["batch_size"], first["seed"]
        self.spec = data.spec
        self.n_train = data.X["train"].shape[0]
        self.train_rows = torch.as_tensor(data.order("train", self.seed), device=device)
        self.y_train = torch.as_tensor(data.targets["train"], device=device)
        self.p_in = [c["dropout_p"] if c["dropout_input"] else 0.0 for c in cfgs]
        self.p_hidden = [c["dropout_p"] for c in cfgs]
        init = initial_state(data.num_features, self.hidden, self.spec.num_outputs, self.seed)
        names = [f"hidden_{i}" for i in range(len(self.hidden))] + ["output"]
        self.layer_names = names
        order = sorted(range(len(cfgs)), key=lambda i: (cfgs[i]["data_standardization"], self.p_in[i]))
        self.ids = order  # config index at each stack position
        C = len(order)
        self.W = [init[f"{n}.weight"].t().contiguous().to(device).unsqueeze(0).repeat(C, 1, 1) for n in names]
        self.b = [init[f"{n}.bias"].to(device).unsqueeze(0).repeat(C, 1) for n in names]
        self.best_W = [torch.empty_like(w) for w in self.W]
        self.best_b = [torch.empty_like(b) for b in self.b]
        self.best = [float("-inf")] * len(cfgs)
        self.boredom = [0] * len(cfgs)
        self.best_step: list = [None] * len(cfgs)
        self.curve: list = [[] for _ in cfgs]  # [step, validation score] per evaluation, per config
        self._bind()
        self.opt = _make_adam(self.views, [cfgs[i] for i in self.ids])

    # -- stack bookkeeping
    def _bind(self):
        """(Re)create gradient buffers, per-config views, variant blocks and dropout indices."""
        self.gW = [torch.empty_like(w) for w in self.W]
        # the first layer's gradient as computed, when that is not float32 (then copied into gW[0]), and the
        # weights as multiplied (kept between steps, so that no large buffer is allocated per step)
        low = self.cdtype != torch.float32
        self.gW0 = torch.empty_like(self.W[0], dtype=self.cdtype) if low else None
        self.W0c = torch.empty_like(self.W[0], dtype=self.cdtype) if low else None
        self.W0c_current = False
        self.gb = [torch.empty_like(b) for b in self.b]
        self.views = []
        for pos in range(len(self.ids)):
            params = []
            for l in range(len(self.W)):
                for p, g in ((self.W[l][pos], self.gW[l][pos]), (self.b[l][pos], self.gb[l][pos])):
                    p.grad = g
                    params.append(p)
            self.views.append(params)
        self.blocks = []
        for pos, i in enumerate(self.ids):
            variant = (self.cfgs[i]["data_standardization"], self.p_in[i])
            if self.blocks and self.blocks[-1][0] == variant:
                self.blocks[-1][2] = pos + 1
            else:
                self.blocks.append([variant, pos, pos + 1])
        ps = sorted({self.p_hidden[i] for i in self.ids})
        self.hidden_ps = ps
        self.hidden_p_index = torch.as_tensor([ps.index(self.p_hidden[i]) for i in self.ids], device=self.device)

    def _compact(self, keep_pos: list[int]):
        """Drop finished configs from the stack, carrying the optimizer state of the others."""
        if not keep_pos:
            self.ids = []
            return
        idx = torch.as_tensor(keep_pos, device=self.device, dtype=torch.long)
        old_views, old_state = self.views, self.opt.state
        carried = [old_views[p] for p in keep_pos]
        for name in ("W", "b", "best_W", "best_b"):
            setattr(self, name, [t.index_select(0, idx) for t in getattr(self, name)])
        self.ids = [self.ids[p] for p in keep_pos]
        self._bind()
        pairs = [(new, old_state[old]) for new_p, old_p in zip(self.views, carried)
                 for new, old in zip(new_p, old_p) if old in old_state]  # fmt: skip
        self.opt = _make_adam(self.views, [self.cfgs[i] for i in self.ids], old=pairs)

    # -- forward passes
    def _first_weights(self) -> torch.Tensor:
        """The first layer's weights in the products' dtype (cast once per update)."""
        if self.W0c is None:
            return self.W[0]
        if not self.W0c_current:
            self.W0c.copy_(self.W[0])
            self.W0c_current = True
        return self.W0c

    def _forward_rest(self, Z, masks=None, part=slice(None)):
        """The layers after the first product ``Z`` of the stack ``part``: (pre-activations, activations, output)."""
        pre, acts = [Z], []
        for l in range(1, len(self.W)):
            A = torch.relu(Z)
            if masks is not None and masks[l - 1] is not None:
                A = A * masks[l - 1]
            acts.append(A)
            Z = torch.baddbmm(self.b[l][part].unsqueeze(1), A, self.W[l][part])
            pre.append(Z)
        return pre, acts, Z

    def logits(self, split: str) -> torch.Tensor:
        """Eval-mode outputs ``(C, N, K)`` of the stack (no dropout) on ``split``."""
        out = []
        n = self.data.X[split].shape[0]
        width = max([self.spec.num_outputs, *self.hidden])
        chunk = max(1, (1 << 25) // max(1, n * width))
        W0 = self._first_weights()
        for (standardize, _), start, end in self.blocks:
            X = self.feats.X(standardize, split, self.cdtype)
            for s in range(start, end, chunk):
                e = min(end, s + chunk)
                Z = torch.matmul(X, W0[s:e]).float() + self.b[0][s:e].unsqueeze(1)
                out.append(self._forward_rest(Z, part=slice(s, e))[2])
        return torch.cat(out)

    def train_step(self, rows: torch.Tensor, gen: torch.Generator):
        """One Adam update of every config in the stack on the minibatch ``rows``."""
        B, D = rows.shape[0], self.data.num_features
        X = {s: self.feats.X(s, "train").index_select(0, rows) for s in {v[0] for v, _, _ in self.blocks}}
        # Noise is drawn whether or not this stack uses it, so that what a config sees does not depend on
        # which configs share its stack (a resumed grid trains the unfinished ones without the others).
        in_noise = torch.rand((B, D), generator=gen, device=self.device)
        inputs = []
        for (standardize, p), start, end in self.blocks:
            x = X[standardize]
            if p > 0:
                x = x * ((in_noise >= p).to(x.dtype) * (1.0 / (1.0 - p)))
            inputs.append(x.to(self.cdtype))
        C = len(self.ids)
        W0 = self._first_weights()
        Z0 = torch.empty((C, B, W0.shape[2]), device=self.device, dtype=self.cdtype)
        for x, (_, start, end) in zip(inputs, self.blocks):
            torch.matmul(x, W0[start:end], out=Z0[start:end])
        Z0 = Z0.float()  # the same tensor when the products are float32
        Z0 += self.b[0].unsqueeze(1)
        masks = []
        for width in self.hidden:
            noise = torch.rand((B, width), generator=gen, device=self.device)
            if self.hidden_ps == [0.0]:
                masks.append(None)
                continue
            by_p = torch.stack([(noise >= p).to(noise.dtype) * (1.0 / (1.0 - p)) for p in self.hidden_ps])
            masks.append(by_p.index_select(0, self.hidden_p_index))
        pre, acts, out = self._forward_rest(Z0, masks)
        dZ = loss_gradient(self.spec.task, out, self.y_train.index_select(0, rows))
        for l in range(len(self.W) - 1, 0, -1):
            A = acts[l - 1]
            torch.bmm(A.transpose(1, 2), dZ, out=self.gW[l])
            torch.sum(dZ, 1, out=self.gb[l])
            dA = torch.bmm(dZ, self.W[l].transpose(1, 2))
            if masks[l - 1] is not None:
                dA = dA * masks[l - 1]
            dZ = dA * (pre[l - 1] > 0)
        gW0 = self.gW[0] if self.gW0 is None else self.gW0
        dZc = dZ.to(self.cdtype)
        for x, (_, start, end) in zip(inputs, self.blocks):
            torch.matmul(x.t(), dZc[start:end], out=gW0[start:end])
        if self.gW0 is not None:
            self.gW[0].copy_(gW0)
        torch.sum(dZ, 1, out=self.gb[0])
        self.opt.step()
        self.W0c_current = False

    # -- the loop
    def state_dict(self, pos: int, best: bool) -> dict:
        W, b = (self.best_W, self.best_b) if best else (self.W, self.b)
        state = {}
        for l, name in enumerate(self.layer_names):
            state[f"{name}.weight"] = W[l][pos].t().contiguous().cpu()
            state[f"{name}.bias"] = b[l][pos].clone().cpu()
        return state

    def run(self, on_finish: Callable, progress=None):
        """Train until every config has stopped; ``on_finish(index, state_dict, info)`` for each."""
        start = time.time()
        cfgs = self.cfgs
        rng = random.Random(self.seed) if self.seed is not None else random.Random()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed if self.seed is not None else random.getrandbits(63))
        metric_names = sorted({cfgs[i]["early_stopping_metric"].lstrip("-") for i in self.ids})
        where = f"{self.data.dataset}/{self.data.representation}"
        k = min(self.batch_size, self.n_train)
        step = 0
        while self.ids:
            epoch = step * self.batch_size / self.n_train
            finished = {}  # position -> (stopped_by, restore best)
            due = []
            for pos, i in enumerate(self.ids):
                cfg = cfgs[i]
                if cfg["max_num_epochs"] is not None and epoch > cfg["max_num_epochs"]:
                    finished[pos] = ("max_num_epochs", False)
                elif cfg["early_stopping"] and step % cfg["early_stopping_eval_frequency"] == 0:
                    if self.boredom[i] >= cfg["early_stopping_boredom"]:
                        finished[pos] = ("early_stopping", self.best_step[i] is not None)
                    else:
                        due.append(pos)
            if due:
                with torch.no_grad():
                    logits = self.logits("valid")
                metrics = compute_metrics(self.spec, logits, self.data.targets["valid"], self.data.uids["valid"],
                                          names=metric_names)  # fmt: skip
                improved = []
                for pos in due:
                    i = self.ids[pos]
                    score = _score_of(cfgs[i], {k_: v[pos] for k_, v in metrics.items()},
                                      f"{where} {self.uids[i]} step {step}")  # fmt: skip
                    self.curve[i].append([step, score])
                    if score > self.best[i]:
                        self.best[i], self.boredom[i], self.best_step[i] = score, 0, step
                        improved.append(pos)
                    else:
                        self.boredom[i] += 1
                if improved:
                    idx = torch.as_tensor(improved, device=self.device)
                    for src, dst in ((self.W, self.best_W), (self.b, self.best_b)):
                        for s_, d_ in zip(src, dst):
                            d_.index_copy_(0, idx, s_.index_select(0, idx))
            if finished:
                for pos, (stopped_by, restore) in finished.items():
                    i = self.ids[pos]
                    info = _info("vectorised", self.device, step, self.best_step[i], self.best[i], stopped_by,
                                 time.time() - start, group_size=len(cfgs), precision=self.precision,
                                 valid_curve=self.curve[i])  # fmt: skip
                    on_finish(i, self.state_dict(pos, best=restore), info)
                    if progress is not None:
                        progress.update(1)
                self._compact([p for p in range(len(self.ids)) if p not in finished])
                if not self.ids:
                    break
            rows = self.train_rows.index_select(0, torch.as_tensor(rng.sample(range(self.n_train), k), device=self.device))
            with torch.no_grad():
                self.train_step(rows, gen)
            step += 1
            if progress is not None and step % 256 == 0:
                progress.set_postfix(step=step, training=len(self.ids), refresh=False)


def _stack_parts(members: list, data: ProbeData, device: torch.device, precision: str) -> list[list[int]]:
    """Split a group into stacks of at most :data:`CPU_STACK_PARAMS` parameters (bf16 on CPU only).

    The split changes nothing a config sees: every stack of a group draws the
    same minibatches and dropout noise (see :meth:`_Group.train_step`).
    """
    n = len(members)
    if device.type != "cpu" or precision == "fp32" or n <= 1:
        return [list(range(n))]
    sizes = [data.num_features, *members[0]["hidden_layer_sizes"], data.spec.num_outputs]
    params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))
    k = max(1, CPU_STACK_PARAMS // params)
    return [list(range(s, min(n, s + k))) for s in range(0, n, k)]


def _macs_per_update(cfg, data: ProbeData) -> int:
    """Multiply-adds of one config's minibatch update (forward and backward, about 3x the forward)."""
    sizes = [data.num_features, *cfg["hidden_layer_sizes"], data.spec.num_outputs]
    return 3 * cfg["batch_size"] * sum(a * b for a, b in zip(sizes, sizes[1:]))


def train_probes(cfgs: Sequence, data: ProbeData, device=None, progress: bool = True,
                 on_finish: Callable | None = None, precision: str = "fp32") -> list[Probe]:  # fmt: skip
    """Train many configs of one dataset x representation at once (see the module docstring).

    Args:
        cfgs: configs (dicts or :class:`ProbeConfig`), any mix of architectures,
            batch sizes and seeds; each group sharing :func:`group_key` is one stack.
        data: from :func:`load_probe_data` (loaded once, kept on ``device``).
        device: torch device (default: cuda if available, else cpu).
        on_finish: called with each :class:`Probe` as soon as it stops (to save it).
        precision: ``"fp32"`` (the original's arithmetic) or ``"bf16"``: the
            first layer's products (forward, weight gradient, validation) in
            bfloat16 with float32 accumulation; weights, Adam and the rest stay
            float32. Faster where bf16 has hardware support (GPU tensor
            cores; on an AMX CPU 1.5-2x for 4,800 x 512 MLP stacks), with
            statistically the same results (see benchmarks/probe_grid.py and
            the tests).

    Returns the trained probes in the order of ``cfgs``.
    """
    cfgs = [ProbeConfig(c) for c in cfgs]
    for cfg in cfgs:
        _termination_check(cfg)
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    device = torch_device(device)
    feats = _Features(data, device)
    probes: list = [None] * len(cfgs)
    bar, own_bar = (progress, False) if not isinstance(progress, bool) else (None, progress)
    if own_bar:
        from tqdm import tqdm

        bar = tqdm(total=len(cfgs), desc=f"probe {data.dataset}/{data.representation}", unit="cfg", file=sys.stderr)
    try:
        for group in plan_groups(cfgs):
            members = [cfgs[i] for i in group]

            def finish(j, state, info, group=group, members=members):
                cfg = members[j]
                model = SimpleMLP(data.num_features, cfg["hidden_layer_sizes"], data.spec.num_outputs,
                                  dropout_input=cfg["dropout_input"], dropout_p=cfg["dropout_p"])  # fmt: skip
                model.load_state_dict(state)
                probe = Probe(cfg, data.spec, feats.scaler(cfg["data_standardization"]), model.to(device), info)
                probes[group[j]] = probe
                if on_finish is not None:
                    on_finish(probe)

            for part in _stack_parts(members, data, device, precision):
                with cpu_threads_for(device, len(part) * _macs_per_update(members[0], data)):
                    _Group([members[j] for j in part], data, feats, device, precision).run(
                        lambda j, state, info, part=part: finish(part[j], state, info), progress=bar)
    finally:
        if own_bar and bar is not None:
            bar.close()
    return probes


# ---------------------------------------------------------------- a grid of one dataset x representation
def run_is_done(cfg, root: str | Path | None = None, features: str | None = None) -> bool:
    """Whether the run folder of ``cfg`` already holds its metrics.json, and, given the data's
    ``features`` fingerprint, was trained on that data (a run that records none, e.g. the
    original's, is taken as done)."""
    root = Path(root) if root is not None else cache.probes_dir(create=False)
    folder = root / cfg["dataset"] / cfg["representation"] / ProbeConfig(cfg).uid()
    if not (folder / "metrics.json").is_file():
        return False
    return features is None or run_features(folder) in (None, features)


def run_features(folder: str | Path) -> str | None:
    """The data fingerprint a saved run was trained on (None: not recorded); "" if train.json is unreadable."""
    try:
        info = read_json(Path(folder) / "train.json")
    except (OSError, ValueError):
        return ""
    return info.get("features") if isinstance(info, dict) else ""


def train_grid(
    dataset: str,
    representation: str,
    cfgs: Sequence,
    *,
    serial: bool = False,
    precision: str = "fp32",
    device=None,
    executor=None,
    nonfinite: str = "replace",
    overwrite: bool = False,
    progress: bool = True,
    probes_root: str | Path | None = None,
    processed_root: str | Path | None = None,
    representations_root: str | Path | None = None,
) -> list[dict]:
    """Train and save every config of ``dataset`` x ``representation`` that has no finished run.

    Each run is saved to ``<probes_root>/<dataset>/<representation>/<uid>/``
    as soon as it stops, so an interrupted grid resumes where it stopped. A
    finished run trained on other data (features, labels or splits changed
    since: see :attr:`ProbeData.fingerprint`) is stale and trained again.

    Args:
        cfgs: configs whose dataset and representation are these.
        serial: train one config after another with :func:`train_probe` (the
            original's loop) instead of :func:`train_probes`.
        precision: the vectorised trainer's arithmetic (see :func:`train_probes`).
        executor: where groups of configs run (``None`` or a local executor:
            here, features loaded once; otherwise ``executor.map`` over the
            config groups of :func:`plan_groups`, e.g. a Ray executor).
        overwrite: retrain configs that already have a finished run.

    Returns one ``{"uid", "status": "trained"|"skipped", "dir", "metrics"}``
    per config, in the order of ``cfgs`` (metrics: validation metrics).
    """
    cfgs = [ProbeConfig(c) for c in cfgs]
    for cfg in cfgs:
        if (cfg["dataset"], cfg["representation"]) != (dataset, representation):
            raise UserError(f"config {cfg.uid()} is for {cfg['dataset']}/{cfg['representation']}, "
                             f"not {dataset}/{representation}")  # fmt: skip
    root = Path(probes_root) if probes_root is not None else cache.probes_dir()
    if not cfgs:
        return []
    seed = cfgs[0]["seed"]
    data = load_probe_data(dataset, representation, seed=seed if seed is not None else 0, nonfinite=nonfinite,
                           processed_root=processed_root, representations_root=representations_root)  # fmt: skip
    todo = [c for c in cfgs if overwrite or not run_is_done(c, root, data.fingerprint)]
    stale = sum(run_is_done(c, root) for c in todo) if not overwrite else 0
    if stale:
        print(f"jukemir probe: {dataset}/{representation}: {stale} finished run(s) were trained on other features "
              f"or metadata than those there now; retraining them", file=sys.stderr)  # fmt: skip
    if executor is not None and getattr(executor, "name", "local") != "local":
        shards = [[dict(todo[i]) for i in g] for g in plan_groups(todo)]
        task = functools.partial(
            _grid_shard, dataset, representation, serial=serial, precision=precision, device=device,
            nonfinite=nonfinite,
            overwrite=overwrite, probes_root=str(root), processed_root=processed_root,
            representations_root=representations_root,
        )  # fmt: skip
        executor.map(task, shards)
        return [_run_summary(c, root, "trained" if c in todo else "skipped") for c in cfgs]

    trained: set = set()
    if todo:

        def save(probe):
            probe.save(data, root)
            trained.add(probe.cfg.uid())

        bar = None
        if progress:
            from tqdm import tqdm

            what = f"probe {dataset}/{representation}" + (" (serial)" if serial else "")
            bar = tqdm(total=len(todo), desc=what, unit="cfg", file=sys.stderr)
        units = [[c] for c in todo] if serial else [[todo[i] for i in g] for g in plan_groups(todo)]
        started = time.time()
        try:
            for unit in _claimed_units(units, root / dataset / representation, serial):
                # another worker may have finished some of them while this one waited for the claim
                left = [c for c in unit if not _finished_since(c, root, data.fingerprint, overwrite, started)]
                if bar is not None:
                    bar.update(len(unit) - len(left))
                if serial and left:
                    save(train_probe(left[0], data, device=device))
                    if bar is not None:
                        bar.update()
                elif left:
                    train_probes(left, data, device=device, progress=bar, on_finish=save, precision=precision)
        finally:
            if bar is not None:
                bar.close()
    return [_run_summary(c, root, "trained" if c.uid() in trained else "skipped") for c in cfgs]


def _claimed_units(units: list[list], folder: Path, serial: bool):
    """Yield each unit of work (a config, or a group of configs trained as one stack) while holding its claim.

    A unit another worker holds is deferred; once the free ones are done, this
    worker waits for each deferred claim in turn (the other worker may have died,
    or finished only some of the configs), so concurrent workers on one grid
    share it instead of all training everything.
    """
    def lock_of(unit):
        key = unit[0].uid() if serial else json.dumps(group_key(unit[0]))
        return FileLock(folder / ".claims" / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".lock"))

    deferred = []
    for unit in units:
        lock = lock_of(unit)
        if not lock.acquire():
            deferred.append(unit)
            continue
        try:
            yield unit
        finally:
            lock.release()
    if deferred:
        print(f"jukemir probe: another worker is training {sum(map(len, deferred))} of these configs; "
              "waiting to take over whatever it does not finish", file=sys.stderr)  # fmt: skip
    for unit in deferred:
        lock = lock_of(unit)
        lock.acquire(wait=True)
        try:
            yield unit
        finally:
            lock.release()


def _finished_since(cfg, root: Path, features: str, overwrite: bool, started: float) -> bool:
    """Whether ``cfg`` needs no training now: done on this data (with ``overwrite``: done since ``started``)."""
    if not run_is_done(cfg, root, features):
        return False
    if not overwrite:
        return True
    metrics = root / cfg["dataset"] / cfg["representation"] / ProbeConfig(cfg).uid() / "metrics.json"
    return metrics.stat().st_mtime >= started


def _grid_shard(dataset, representation, cfgs, **kwargs):
    return train_grid(dataset, representation, cfgs, progress=False, **kwargs)


def _run_summary(cfg, root: Path, status: str) -> dict:
    folder = root / cfg["dataset"] / cfg["representation"] / cfg.uid()
    metrics_file = folder / "metrics.json"
    return {"uid": cfg.uid(), "status": status, "dir": str(folder),
            "metrics": read_json(metrics_file) if metrics_file.is_file() else None}  # fmt: skip
