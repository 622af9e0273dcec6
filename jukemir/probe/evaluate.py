"""Pick each dataset x representation's best probe on validation and report its test metrics.

As the original's ``aggregate`` (docs/probes.md), except that ties in the
validation metric go to the smallest config uid (the original took whichever
run the filesystem listed first) and the data folders given are honoured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..cache import Layout, folder_name
from ..datasets import SPLITS, get_dataset
from ..errors import NotFoundError, UserError
from ..io import read_json, write_json
from .data import ProbeData, load_probe_data
from .run import Probe, load_probe_dir, run_features


class Row(dict):
    """A row of :func:`evaluate` (a JSON-able dict), which also keeps what was loaded to compute it:
    ``probe`` (the selected :class:`~jukemir.probe.run.Probe`), ``data`` (the
    :class:`~jukemir.probe.data.ProbeData` it was evaluated on) and ``run`` (its
    run folder), so that the report draws its figures from them instead of
    reading them again."""

    def __init__(self, fields: dict, probe: Probe, data: ProbeData, run: Path):
        super().__init__(fields)
        self.probe, self.data, self.run = probe, data, run


def headline_metrics(spec) -> list[str]:
    """The metrics the paper reports for a dataset: accuracy, key score, AUC and AP, or R² per output."""
    if spec.key_clips:
        return ["score"]
    if spec.task == "multiclass":
        return ["accuracy"]
    if spec.task == "multilabel":
        return ["auc_roc", "ap"]
    return [f"{name}_r2" for name in spec.output_names] if spec.output_names else ["r2"]


def find_runs(dataset: str, representation: str, layout: Layout | None = None) -> list[Path]:
    """Finished run folders (those with metrics.json) of a dataset x representation, sorted by uid."""
    folder = (layout or Layout()).probes(dataset, representation)
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


def discover_pairs(
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    layout: Layout | None = None,
) -> list[tuple[str, str]]:
    """(dataset, representation folder name) pairs that have at least one finished run, sorted."""
    if representations is not None:
        representations = [folder_name(r) for r in representations]
    pairs = set()
    for metrics in (layout or Layout()).probes().glob("*/*/*/metrics.json"):
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
    layout: Layout | None = None,
) -> Row:
    """Select the best run on validation ``metric`` and evaluate it on ``split``.

    Returns a :class:`Row`: ``dataset``, ``representation``, ``task``, ``primary``,
    ``metric`` (the selection metric), ``num_runs``, ``best_uid``, ``cfg``,
    ``train`` (how that run trained), ``split``, ``valid`` (its validation
    metrics) and ``<split>`` (its metrics on ``split``). Runs, features and
    metadata are read from ``layout`` (default ``Layout()``).
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {SPLITS}, got {split!r}")
    layout = layout or Layout()
    runs = find_runs(dataset, representation, layout)
    if not runs:
        raise NotFoundError(
            f"{layout.probes(dataset, representation)}: no finished probe runs; run `jukemir probe` first"
        )
    if expected_num_runs is not None and len(runs) != expected_num_runs:
        raise UserError(f"{runs[0].parent}: {len(runs)} finished runs, expected {expected_num_runs}")
    best_dir, valid = select_best(runs, metric)
    probe = load_probe_dir(best_dir, device=device, layout=layout)
    data = load_probe_data(
        dataset, representation, seed=probe.cfg["seed"], nonfinite=nonfinite, layout=layout
    )
    if run_features(best_dir) not in (None, data.fingerprint):
        raise UserError(
            f"{best_dir}: trained on other features or metadata than those of {dataset}/{representation} "
            f"now; run `jukemir probe {dataset} {representation}` again to retrain stale runs"
        )
    spec = get_dataset(dataset, layout)
    fields = {
        "dataset": dataset,
        "representation": folder_name(representation),
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
    return Row(fields, probe, data, best_dir)


def evaluations(
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    split: str = "test",
    metric: str = "primary",
    layout: Layout | None = None,
    **kwargs,
) -> Iterator[Row]:
    """:func:`evaluate_pair` for every dataset x representation with runs in ``layout`` (optionally
    filtered), one at a time, sorted by dataset then representation.

    Each :class:`Row` keeps its probe and data until it is dropped, so that
    whoever reads them (the report) holds one pair's features at a time. Other
    keyword arguments go to :func:`evaluate_pair`.
    """
    layout = layout or Layout()
    pairs = discover_pairs(datasets, representations, layout)
    if not pairs:
        raise NotFoundError(
            f"{layout.probes()}: no finished probe runs for the datasets/representations asked for"
        )
    for ds, rep in pairs:
        yield evaluate_pair(ds, rep, split=split, metric=metric, layout=layout, **kwargs)


def evaluate(
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    split: str = "test",
    metric: str = "primary",
    out: str | Path | None = None,
    **kwargs,
) -> list[dict]:
    """The rows of :func:`evaluations` as plain dicts (``out``: also write them there as JSON).

    Keyword arguments (``layout``, ``device``, ...) go to :func:`evaluations`.
    """
    rows = [dict(row) for row in evaluations(datasets, representations, split=split, metric=metric, **kwargs)]
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
    cells = {
        (row["representation"], row["dataset"], name): row[row["split"]][name]
        for row in rows
        for name in row["headline"]
    }
    splits = sorted({row["split"] for row in rows})
    header = ["representation"] + [f"{ds} {name}" for ds, name in columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    for rep in reps:
        values = [cells.get((rep, ds, name)) for ds, name in columns]
        lines.append(
            "| " + " | ".join([rep] + ["" if v is None else f"{100 * v:.1f}" for v in values]) + " |"
        )
    lines.append("")
    lines.append(
        f"{'/'.join(splits)} metrics x 100 of the probe with the best validation metric "
        "per dataset x representation."
    )
    return "\n".join(lines)
