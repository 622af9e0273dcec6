"""The features and targets a probe trains on, and what to do with non-finite features.

Data (docs/probes.md): ``processed/<dataset>/meta.json`` names the items and
their splits; ``representations/<dataset>/<representation>/<uid>.npy`` holds
one 1-D feature vector per item (paths: :class:`jukemir.cache.Layout`). Each
split is ordered as the original did: sorted uids, then
``random.seed(seed); random.shuffle(uids)``.
"""

from __future__ import annotations

import functools
import hashlib
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import Layout
from ..datasets import SPLITS, DatasetSpec, get_dataset, load_meta
from ..errors import NotFoundError, UserError
from ..io import load_npy

NONFINITE_POLICIES = ("replace", "error")


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
            f"jukemir probe: warning: {dataset}/{representation}: "
            f"{self.files} of {self.total_files} feature files have non-finite values "
            f"({self.nan} NaN, {self.posinf} +inf, {self.neginf} -inf "
            f"in {self.dims} of {self.total_dims} dims); "
            "replaced +/-inf by the training split's per-dimension finite max/min and "
            "NaN by its finite mean"
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

    def reordered(self, seed: int | None) -> ProbeData:
        """The same data in the original's order for another ``seed``."""
        if seed is not None and seed == self.seed:
            return self
        orders = {s: self.order(s, seed) for s in SPLITS}
        return ProbeData(
            self.dataset,
            self.representation,
            self.spec,
            seed,
            {s: [self.uids[s][i] for i in o] for s, o in orders.items()},
            {s: self.X[s][o] for s, o in orders.items()},
            {s: self.targets[s][o] for s, o in orders.items()},
            self.feature_dir,
            self.nonfinite,
        )


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
            raise UserError(
                f"{where}: regression targets must be lists of {spec.num_outputs} numbers"
            ) from None
        if out.shape[1] != spec.num_outputs:
            raise UserError(
                f"{where}: regression targets have {out.shape[1]} values, "
                f"{spec.name} needs {spec.num_outputs}"
            )
        return out
    index = {label: i for i, label in enumerate(spec.labels)}

    def lookup(uid, label):
        if label not in index:
            raise UserError(
                f"{where}: item {uid!r} has label {label!r}, "
                f"not one of the {len(index)} labels of {spec.name}"
            )
        return index[label]

    if spec.task == "multiclass":
        return np.array([lookup(uid, y) for uid, y in zip(uids, ys)], dtype=np.int64)
    out = np.zeros((len(ys), spec.num_outputs), dtype=np.uint8)
    for i, (uid, tags) in enumerate(zip(uids, ys)):
        if not isinstance(tags, list):
            raise UserError(
                f"{where}: item {uid!r} of multilabel {spec.name} has y={tags!r}, expected a list of tags"
            )
        for tag in tags:
            out[i, lookup(uid, tag)] = 1
    return out


def load_probe_data(
    dataset: str,
    representation: str,
    seed: int | None = 0,
    nonfinite: str = "replace",
    layout: Layout | None = None,
    verbose: bool = True,
) -> ProbeData:
    """Load the train/valid/test features and targets of ``dataset`` x ``representation``.

    Args:
        seed: orders each split as the original does for this seed.
        nonfinite: ``"replace"`` (default): +inf/-inf become the training
            split's per-dimension finite max/min and NaN its finite mean (a
            dimension with no finite training value becomes 0), with a one-line
            warning on stderr; ``"error"``: refuse, naming the first bad file.
        layout: the cache to read (default: ``Layout()``, ``$JUKEMIR_CACHE_DIR``'s).
        verbose: print the non-finite warning.

    Raises ``FileNotFoundError`` for a missing meta.json, feature folder or
    feature file, and ``ValueError`` for a feature of the wrong shape, an
    unknown label or an empty split; each names the file.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise UserError(f"nonfinite policy must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    layout = layout or Layout()
    spec = get_dataset(dataset, layout)
    meta = load_meta(dataset, layout)
    where = layout.meta(dataset)
    feature_dir = layout.representations(dataset, representation)
    if not feature_dir.is_dir():
        raise NotFoundError(
            f"{feature_dir}: no features of {dataset}/{representation}; run `jukemir extract` first"
        )

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
            except OSError as exc:
                raise UserError(f"{path}: cannot read feature file ({exc.strerror or exc})") from None
            if (
                x.ndim != 1
                or x.size == 0
                or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer))
            ):
                raise UserError(
                    f"{path}: feature has shape {x.shape} ({x.dtype}), expected a non-empty 1-D vector "
                    "of real numbers"
                )
            dim = x.shape[0] if dim is None else dim
            if x.shape[0] != dim:
                raise UserError(f"{path}: feature has {x.shape[0]} dims, {first_path} has {dim}")
            rows.append(x)
        X[split] = np.asarray(rows, dtype=np.float32)

    report = _handle_nonfinite(X, paths, nonfinite)
    if report is not None and verbose:
        print(report.summary(dataset, representation), file=sys.stderr)
    targets = {
        s: encode_targets(spec, [meta[u]["y"] for u in by_split[s]], by_split[s], where) for s in SPLITS
    }
    return ProbeData(dataset, representation, spec, seed, by_split, X, targets, feature_dir, report)


def _handle_nonfinite(X: dict, paths: dict, policy: str) -> NonfiniteReport | None:
    bad = {s: ~np.isfinite(X[s]) for s in SPLITS}
    if not any(b.any() for b in bad.values()):
        return None
    if policy == "error":
        path, count = min(
            (paths[s][r], int(bad[s][r].sum())) for s in SPLITS for r in np.flatnonzero(bad[s].any(1))
        )
        raise UserError(
            f"{path}: {count} non-finite feature values (NaN/inf); "
            f"use the 'replace' non-finite policy to replace them"
        )
    train = X["train"]
    finite = np.isfinite(train)
    empty = ~finite.any(0)
    hi = np.where(finite, train, -np.inf).max(0)
    lo = np.where(finite, train, np.inf).min(0)
    mean = np.where(finite, train, 0).sum(0, dtype=np.float64) / np.maximum(finite.sum(0), 1)
    hi[empty], lo[empty], mean[empty] = 0, 0, 0
    counts = {"nan": 0, "posinf": 0, "neginf": 0}
    for s in SPLITS:
        x = X[s]
        counts["nan"] += int(np.isnan(x).sum())
        counts["posinf"] += int(np.isposinf(x).sum())
        counts["neginf"] += int(np.isneginf(x).sum())
        X[s] = np.where(
            np.isnan(x),
            mean.astype(np.float32),
            np.where(np.isposinf(x), hi, np.where(np.isneginf(x), lo, x)),
        )
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
