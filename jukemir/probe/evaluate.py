"""Pick each dataset x representation's best probe on validation and report its test metrics.

As the original's ``aggregate`` (docs/probes.md), except that ties in the
validation metric go to the smallest config uid (the original took whichever
run the filesystem listed first) and the data folders given are honoured.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .. import cache
from ..datasets import SPLITS, get_dataset
from ..errors import NotFoundError, UserError
from ..io import read_json, write_json
from .train import load_probe_data, load_probe_dir, run_features


def headline_metrics(spec) -> list[str]:
    """The metrics the paper reports for a dataset: accuracy, key score, AUC and AP, or R² per output."""
    if spec.key_clips:
        return ["score"]
    if spec.task == "multiclass":
        return ["accuracy"]
    if spec.task == "multilabel":
        return ["auc_roc", "ap"]
    return [f"{name}_r2" for name in spec.output_names] if spec.output_names else ["r2"]


def find_runs(dataset: str, representation: str, root: str | Path | None = None) -> list[Path]:
    """Finished run folders (those with metrics.json) of a dataset x representation, sorted by uid."""
    root = Path(root) if root is not None else cache.probes_dir(create=False)
    folder = root / dataset / representation
    return sorted((p.parent for p in folder.glob("*/metrics.json")), key=lambda p: p.name)


def select_best(run_dirs: Sequence[Path], metric: str = "primary") -> tuple[Path, dict]:
    """The run with the highest validation ``metric``; ties go to the smallest uid.

    Returns ``(run folder, its validation metrics)``.
    """
    best = None
    for run in sorted(run_dirs, key=lambda p: p.name):
        metrics = read_json(run / "metrics.json")
        if metric not in metrics:
            raise UserError(f"{run / 'metrics.json'}: no metric {metric!r} (has {sorted(metrics)})")
        value = metrics[metric]
        if value is None or math.isnan(value):
            raise UserError(f"{run / 'metrics.json'}: {metric} is {value}")
        if best is None or value > best[1][metric]:
            best = (run, metrics)
    if best is None:
        raise UserError("no runs to select from")
    return best


def discover_pairs(datasets: Sequence[str] | None = None, representations: Sequence[str] | None = None,
                   root: str | Path | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """(dataset, representation) pairs that have at least one finished run, sorted."""
    root = Path(root) if root is not None else cache.probes_dir(create=False)
    pairs = set()
    for metrics in root.glob("*/*/*/metrics.json"):
        ds, rep = metrics.parts[-4], metrics.parts[-3]
        if (datasets is None or ds in datasets) and (representations is None or rep in representations):
            pairs.add((ds, rep))
    return sorted(pairs)


def evaluate_pair(
    dataset: str,
    representation: str,
    split: str = "test",
    metric: str = "primary",
    expected_num_runs: int | None = None,
    nonfinite: str = "replace",
    device=None,
    probes_root: str | Path | None = None,
    processed_root: str | Path | None = None,
    representations_root: str | Path | None = None,
) -> dict:
    """Select the best run on validation ``metric`` and evaluate it on ``split``.

    Returns a row: ``dataset``, ``representation``, ``task``, ``primary``,
    ``metric`` (the selection metric), ``num_runs``, ``best_uid``, ``cfg``,
    ``train`` (how that run trained), ``split``, ``valid`` (its validation
    metrics) and ``<split>`` (its metrics on ``split``).
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(probes_root) if probes_root is not None else cache.probes_dir(create=False)
    runs = find_runs(dataset, representation, root)
    if not runs:
        raise NotFoundError(f"{root / dataset / representation}: no finished probe runs; run `jukemir probe` first")
    if expected_num_runs is not None and len(runs) != expected_num_runs:
        raise UserError(f"{root / dataset / representation}: {len(runs)} finished runs, expected {expected_num_runs}")
    best_dir, valid = select_best(runs, metric)
    probe = load_probe_dir(best_dir, device=device)
    data = load_probe_data(dataset, representation, seed=probe.cfg["seed"], nonfinite=nonfinite,
                           processed_root=processed_root, representations_root=representations_root)  # fmt: skip
    if run_features(best_dir) not in (None, data.fingerprint):
        raise UserError(f"{best_dir}: trained on other features or metadata than those of {dataset}/{representation} "
                         f"now; run `jukemir probe {dataset} {representation}` again to retrain stale runs")  # fmt: skip
    spec = get_dataset(dataset, processed_root)
    return {
        "dataset": dataset,
        "representation": representation,
        "task": spec.task,
        "primary": spec.primary,
        "headline": headline_metrics(spec),
        "metric": metric,
        "num_runs": len(runs),
        "best_uid": best_dir.name,
        "cfg": dict(probe.cfg),
        "train": probe.info,
        "split": split,
        "valid": valid,
        split: probe.evaluate(data, split),
    }


def evaluate(
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    split: str = "test",
    metric: str = "primary",
    out: str | Path | None = None,
    **kwargs,
) -> list[dict]:
    """:func:`evaluate_pair` for every dataset x representation with runs (optionally filtered).

    ``out``: also write the rows as JSON there. Other keyword arguments go to
    :func:`evaluate_pair`. Returns the rows, sorted by dataset then representation.
    """
    root = kwargs.get("probes_root")
    pairs = discover_pairs(datasets, representations, root)
    if not pairs:
        where = Path(root) if root is not None else cache.probes_dir(create=False)
        raise NotFoundError(f"{where}: no finished probe runs for the datasets/representations asked for")
    rows = [evaluate_pair(ds, rep, split=split, metric=metric, **kwargs) for ds, rep in pairs]
    if out is not None:
        write_json(out, rows)
    return rows


def results_table(rows: Sequence[dict]) -> str:
    """A markdown table: one row per representation, one column per dataset's headline metric (x100)."""
    columns = []
    for row in rows:
        for name in row["headline"]:
            if (row["dataset"], name) not in columns:
                columns.append((row["dataset"], name))
    reps = list(dict.fromkeys(row["representation"] for row in rows))
    cells = {(row["representation"], row["dataset"], name): row[row["split"]][name]
             for row in rows for name in row["headline"]}  # fmt: skip
    splits = sorted({row["split"] for row in rows})
    header = ["representation"] + [f"{ds} {name}" for ds, name in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    for rep in reps:
        values = [cells.get((rep, ds, name)) for ds, name in columns]
        lines.append("| " + " | ".join([rep] + ["" if v is None else f"{100 * v:.1f}" for v in values]) + " |")
    lines.append("")
    lines.append(f"{'/'.join(splits)} metrics x 100 of the probe with the best validation metric per dataset x representation.")
    return "\n".join(lines)
