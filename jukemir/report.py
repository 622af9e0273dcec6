"""Tables and plots: the results beside the paper's, and figures of what the probes learned.

:func:`write_report` evaluates every dataset x representation that has
finished probe runs and writes ``<out>/index.html`` (self-contained apart from
the PNG figures beside it, referenced by relative paths), ``<out>/summary.md``
and ``<out>/results.json``:

* the results table, with the paper's published number beside ours and the
  difference (values not confirmed from the paper itself are marked);
* per-dataset bar charts of the headline metrics per representation, with the
  paper's numbers as markers;
* for the selected probe of each pair: its validation curve; a confusion matrix
  (multiclass: genre, key), per-tag ROC-AUC (multilabel), predicted-vs-true
  scatter (regression);
* a 2-D projection of each representation's features coloured by label (PCA;
  UMAP when ``umap`` is installed);
* provenance: versions, dates, the selected configs and how they trained, and
  the folder runner's provenance records of the features.

The paper's numbers live in one data file, ``jukemir/data/paper_results.json``
(:func:`paper_results`); :func:`comparison_table` formats them beside ours for
``jukemir report`` and ``reproduce/6_evaluate.sh``, and :func:`side_by_side_table`
puts any number of evaluated representations (plugins, ``hf:`` models, MERT,
CLAP, ...) in columns beside the paper's six.
"""

from __future__ import annotations

import datetime
import html
import io
import json
import platform
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__
from .cache import Layout
from .io import atomic_write, read_json, write_json

PAPER_FILE = "paper_results.json"
CONFIRMED = "paper"  # the only confirmation status that means "checked against the paper itself"
MARKS = {"paper": "", "listing": "†", "memory": "*"}  # any other unconfirmed status: "*"
MAX_PROJECTED = 2000  # items drawn in a projection (a seeded subsample beyond this)
UNITS = {"emomusic": "z-score"}  # units of regression targets, where known


def paper_results() -> dict:
    """The paper's published numbers: ``{"source", "confirmation", "columns", "results"}``.

    ``results[representation]["<dataset>/<metric>"] = {"value": metric x 100, "confirmation": status}``;
    ``confirmation[status]`` says what a status means. Only ``"paper"`` (checked
    against the paper PDF) counts as confirmed; ``"listing"`` (a third-party
    listing) and ``"memory"`` (recalled) are shown as unconfirmed.
    """
    resource = resources.files("jukemir").joinpath("data", PAPER_FILE)
    paper = json.loads(resource.read_text())
    for rep, values in paper["results"].items():
        for key, entry in values.items():
            if entry.get("confirmation") not in paper["confirmation"]:
                raise ValueError(
                    f"{resource}: {rep} {key} has confirmation {entry.get('confirmation')!r}, "
                    f"not one of {sorted(paper['confirmation'])}"
                )
    return paper


def mark(confirmation: str | None) -> str:
    """The footnote mark of a paper value's confirmation status ("" when confirmed or absent)."""
    return "" if confirmation in (None, CONFIRMED) else MARKS.get(confirmation, "*")


def comparison_rows(rows: Sequence[dict]) -> list[dict]:
    """Evaluation rows (:func:`jukemir.probe.evaluate.evaluate`) beside the paper, one entry per headline
    metric.

    Each entry: ``dataset``, ``representation``, ``metric``, ``ours`` (x100, on
    the row's split), ``paper`` (x100 or None), ``confirmation`` (the paper
    value's status or None), ``confirmed`` (bool or None), ``difference``
    (ours - paper, or None).
    """
    paper = paper_results()["results"]
    out = []
    for row in rows:
        for metric in row["headline"]:
            ours = 100 * row[row["split"]][metric]
            published = paper.get(row["representation"], {}).get(f"{row['dataset']}/{metric}")
            status = published["confirmation"] if published else None
            out.append(
                {
                    "dataset": row["dataset"],
                    "representation": row["representation"],
                    "metric": metric,
                    "split": row["split"],
                    "ours": ours,
                    "paper": published["value"] if published else None,
                    "confirmation": status,
                    "confirmed": status == CONFIRMED if published else None,
                    "difference": ours - published["value"] if published else None,
                }
            )
    return out


def _footnotes(comps: Sequence[dict]) -> list[str]:
    meanings = paper_results()["confirmation"]
    used = dict.fromkeys(c["confirmation"] for c in comps if c["confirmation"] not in (None, CONFIRMED))
    return [f"{mark(status)} {meanings[status]}" for status in used]


def _cells(c: dict) -> tuple[str, str, str]:
    paper = "–" if c["paper"] is None else f"{c['paper']:.1f}{mark(c['confirmation'])}"
    diff = "–" if c["difference"] is None else f"{c['difference']:+.1f}"
    return f"{c['ours']:.1f}", paper, diff


def comparison_table(rows: Sequence[dict]) -> str:
    """Markdown: our metric, the paper's, and the difference, per dataset x metric x representation (x100).

    ``rows``: as returned by :func:`jukemir.probe.evaluate.evaluate`. Paper values
    not confirmed from the paper itself carry a mark explained under the table.
    """
    comps = comparison_rows(rows)
    lines = [
        "| dataset | metric | representation | ours | paper | difference |",
        "|---|---|---|---:|---:|---:|",
    ]
    for c in comps:
        lines.append(
            f"| {c['dataset']} | {c['metric']} | {c['representation']} | " + " | ".join(_cells(c)) + " |"
        )
    splits = "/".join(sorted({c["split"] for c in comps}))
    lines += ["", f"Metrics x 100 on the {splits} split; paper: test split; difference = ours - paper."]
    lines += [f"{note}." for note in _footnotes(comps)]
    return "\n".join(lines)


def side_by_side(rows: Sequence[dict]) -> dict:
    """Every representation evaluated beside the paper's six, per dataset x headline metric (x100).

    Returns ``{"columns": [(label, kind)], "lines": [{"dataset", "metric", "cells": [value or None]}],
    "marks": [mark per cell]}`` where the columns are the paper's six representations
    (``kind`` "paper", their published numbers) then each representation of
    ``rows`` (``kind`` "ours", in the order of ``rows``), any number of them.
    Lines are the paper's dataset x metric columns first (all of them when a
    paper dataset was evaluated), then any other dataset's metrics.
    """
    paper = paper_results()
    published = paper["results"]
    ours_reps = list(dict.fromkeys(r["representation"] for r in rows))
    ours = {
        (r["dataset"], m, r["representation"]): 100 * r[r["split"]][m] for r in rows for m in r["headline"]
    }
    keys = [tuple(k.split("/")) for k in paper["columns"] if k.split("/")[0] in {r["dataset"] for r in rows}]
    keys += [(r["dataset"], m) for r in rows for m in r["headline"] if (r["dataset"], m) not in keys]
    keys = list(dict.fromkeys(keys))
    columns = [(rep, "paper") for rep in published] + [(rep, "ours") for rep in ours_reps]
    lines, marks = [], []
    for ds, metric in keys:
        cells, line_marks = [], []
        for rep, kind in columns:
            if kind == "paper":
                entry = published[rep].get(f"{ds}/{metric}")
                cells.append(entry["value"] if entry else None)
                line_marks.append(mark(entry["confirmation"]) if entry else "")
            else:
                cells.append(ours.get((ds, metric, rep)))
                line_marks.append("")
        lines.append({"dataset": ds, "metric": metric, "cells": cells})
        marks.append(line_marks)
    return {"columns": columns, "lines": lines, "marks": marks}


def side_by_side_table(rows: Sequence[dict]) -> str:
    """Markdown of :func:`side_by_side`: one line per dataset x metric, the paper's six then ours (x100)."""
    table = side_by_side(rows)
    head = [f"{rep} (paper)" if kind == "paper" else rep for rep, kind in table["columns"]]
    out = ["| dataset | metric | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    for line, marks in zip(table["lines"], table["marks"]):
        cells = ["–" if v is None else f"{v:.1f}{m}" for v, m in zip(line["cells"], marks)]
        out.append(f"| {line['dataset']} | {line['metric']} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Test metrics x 100; (paper): the paper's published numbers; "
        "the others: this cache's selected probes.",
    ]
    used = {m for marks in table["marks"] for m in marks if m}
    meanings = paper_results()["confirmation"]
    out += [f"{mark(s)} {meanings[s]}." for s in meanings if mark(s) in used]
    return "\n".join(out)


# ---------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    with atomic_write(path) as handle:
        handle.write(buf.getvalue())
    return path.name


def metric_label(metric: str) -> str:
    """A readable name for a metric key: ``"auc_roc"`` -> ``"ROC-AUC"``, ``"arousal_r2"`` ->
    ``"arousal R²"``."""
    names = {
        "accuracy": "accuracy",
        "score": "key score (MIREX weighted)",
        "auc_roc": "ROC-AUC",
        "ap": "average precision",
        "r2": "R²",
    }
    if metric in names:
        return names[metric]
    return f"{metric[:-3]} R²" if metric.endswith("_r2") else metric


METRIC_NOTES = {
    "multiclass": "{ds}: accuracy, the share of test items whose most likely class is right.",
    "key": "{ds}: key score (MIREX weighted), per song: 1 for the right key, 0.5 for the key a perfect fifth "
    "above it, 0.3 for its relative major/minor, 0.2 for its parallel key, else 0; a song's key is the "
    "ensemble of its clips' predictions (vote, max, geometric or arithmetic mean, whichever scored best on "
    "validation). Accuracy counts only exact keys, and the confusion matrix shows single clips, so its "
    "accuracy differs from both.",
    "multilabel": "{ds}: ROC-AUC and average precision, each computed per tag over the test clips, then "
    "averaged over the tags (macro).",
    "regression": "{ds}: R², the coefficient of determination, per target (1 is perfect, 0 predicts the "
    "mean); the headline is their mean.",
}


def metric_notes(datasets, layout: Layout | None = None) -> list[str]:
    """One sentence per dataset saying what its metrics measure (for the report's readers); an imported
    dataset's spec is read from ``layout``."""
    from .datasets import get_dataset

    notes = []
    for ds in dict.fromkeys(datasets):
        spec = get_dataset(ds, layout)
        kind = "key" if spec.key_clips else spec.task
        notes.append(METRIC_NOTES[kind].format(ds=ds))
    return notes


def _bar_chart(dataset: str, comps: list[dict], out: Path) -> str:
    from matplotlib.lines import Line2D

    plt = _plt()
    metrics = list(dict.fromkeys(c["metric"] for c in comps))
    reps = list(dict.fromkeys(c["representation"] for c in comps))
    by_key = {(c["representation"], c["metric"]): c for c in comps}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.1 * len(reps) * len(metrics)), 3.8))
    width = 0.8 / len(metrics)
    styles = {True: ("black", "from the paper"), False: ("white", "not yet confirmed from the paper")}
    shown = set()
    for j, metric in enumerate(metrics):
        xs = np.arange(len(reps)) + (j - (len(metrics) - 1) / 2) * width
        ours = [by_key[(r, metric)]["ours"] if (r, metric) in by_key else np.nan for r in reps]
        bars = ax.bar(xs, ours, width * 0.92, color=f"C{j}", label=f"ours: {metric_label(metric)}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        for x, rep in zip(xs, reps):
            c = by_key.get((rep, metric))
            if c is not None and c["paper"] is not None:
                ax.scatter(
                    x,
                    c["paper"],
                    marker="D",
                    s=42,
                    zorder=3,
                    facecolors=styles[c["confirmed"]][0],
                    edgecolors="black",
                )
                shown.add(c["confirmed"])
    handles, _ = ax.get_legend_handles_labels()
    for confirmed in sorted(shown, reverse=True):
        colour, what = styles[confirmed]
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="D",
                markerfacecolor=colour,
                markeredgecolor="black",
                label=f"paper ({what})",
            )
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(reps)), reps)
    ax.set_xlabel("representation")
    ax.set_ylabel(f"{comps[0]['split']} metric (× 100)")
    ax.set_title(f"{dataset}: selected probe per representation")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / f"bars_{dataset}.png")


def _prediction_figure(row: dict, spec, probe, data, out: Path) -> str:
    """Confusion matrix, per-tag ROC-AUC or predicted-vs-true scatter of the selected probe on test."""
    import torch
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    logits = probe.logits(data.X["test"]).float().cpu()
    y = np.asarray(data.targets["test"])
    pair = f"{row['dataset']} / {row['representation']}"
    if spec.task == "multiclass":
        k = spec.num_outputs
        pred = logits.argmax(dim=1).numpy()
        cm = np.zeros((k, k), dtype=int)
        np.add.at(cm, (y.astype(int), pred), 1)
        size = 3.5 + 0.3 * k
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(cm, cmap="Blues")
        labels = spec.labels or [str(i) for i in range(k)]
        ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels, fontsize=8)
        for i, j in zip(*np.nonzero(cm)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
        unit = "clips" if spec.key_clips else "items"
        ax.set_xlabel("predicted label (per clip)" if spec.key_clips else "predicted label")
        ax.set_ylabel("true label")
        accuracy = f"{'per-clip ' if spec.key_clips else ''}accuracy {100 * np.mean(pred == y):.1f}%"
        ax.set_title(f"{pair}: test confusion matrix\n{len(y)} {unit}, {accuracy}")
        fig.colorbar(im, ax=ax, fraction=0.046, label=f"number of {unit}", ticks=MaxNLocator(integer=True))
    elif spec.task == "multilabel":
        from .probe.metrics import roc_auc_per_label

        auc = roc_auc_per_label(torch.as_tensor(y), torch.sigmoid(logits), spec.labels).numpy()
        order = np.argsort(auc)
        fig, ax = plt.subplots(figsize=(6, 1.5 + 0.17 * len(auc)))
        ax.barh(np.arange(len(auc)), auc[order], color="C0")
        ax.axvline(auc.mean(), color="C3", lw=1.2, label=f"macro mean {auc.mean():.3f}")
        ax.set_yticks(np.arange(len(auc)), [spec.labels[i] for i in order], fontsize=7)
        ax.set_ylim(-0.7, len(auc) - 0.3)
        ax.set_xlabel("test ROC-AUC (0.5 = chance, 1 = perfect)")
        ax.set_xlim(min(0.5, float(auc.min()) - 0.02), 1.0)
        ax.set_title(f"{pair}: ROC-AUC per tag ({len(y)} test items)")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(axis="x", alpha=0.3)
    else:
        pred = logits.numpy()
        names = spec.output_names or [f"output {i}" for i in range(pred.shape[1])]
        unit = UNITS.get(row["dataset"], "label units")
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), squeeze=False)
        for i, (ax, n) in enumerate(zip(axes[0], names)):
            ax.scatter(y[:, i], pred[:, i], s=12, alpha=0.6, label="test items")
            lo, hi = float(min(y[:, i].min(), pred[:, i].min())), float(max(y[:, i].max(), pred[:, i].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = true")
            ax.set_aspect("equal")
            ax.set_xlabel(f"true {n} ({unit})")
            ax.set_ylabel(f"predicted {n} ({unit})")
            r2 = row["test"].get(f"{n}_r2", row["test"]["r2"] if len(names) == 1 else float("nan"))
            ax.set_title(f"{n}: R² = {r2:.3f}")
            ax.legend(fontsize=8, loc="upper left")
            ax.grid(alpha=0.3)
        fig.suptitle(f"{pair}: predicted vs true on test ({len(y)} items)")
    return _save(fig, out / f"pred_{row['dataset']}_{row['representation']}.png")


def _curve_figure(row: dict, out: Path) -> str | None:
    """The selected probe's validation metric at each early-stopping evaluation (None if not recorded)."""
    curve = (row.get("train") or {}).get("valid_curve")
    if not curve:
        return None
    plt = _plt()
    steps, scores = zip(*curve)
    cfg = row["cfg"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(steps, scores, lw=1.2, label=f"validation {metric_label(row['primary'])}")
    best = row["train"].get("best_step")
    if best is not None:
        ax.axvline(best, color="black", ls="--", lw=1, label=f"restored weights (step {best})")
    ax.set_xlabel("training step (minibatch updates)")
    ax.set_ylabel(f"validation {metric_label(row['primary'])}")
    hidden = cfg.get("hidden_layer_sizes") or "none (linear)"
    ax.set_title(
        f"{row['dataset']} / {row['representation']}: selected probe {row['best_uid'][:8]}\n"
        f"hidden layers {hidden}, learning rate {cfg.get('learning_rate'):g}, "
        f"L2 {cfg.get('l2_weight_decay') or 'off'}, best of {row['num_runs']} run(s)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"curve_{row['dataset']}_{row['representation']}.png")


def project_2d(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Standardise ``X`` ``(N, D)`` per dimension and project it to ``(N, 2)``.

    UMAP when the ``umap`` package is importable, else PCA (then the axis names
    give each component's share of the variance). Returns ``(coords, [x name, y name])``.
    """
    X = np.asarray(X, dtype=np.float64)
    X = (X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1.0)
    try:
        import umap
    except ImportError:
        _, s, vt = np.linalg.svd(X, full_matrices=False)
        share = s**2 / max(float(np.sum(s**2)), 1e-30)
        return X @ vt[:2].T, [f"PC {i + 1} ({100 * share[i]:.0f}% of variance)" for i in range(2)]
    return umap.UMAP(random_state=seed).fit_transform(X), ["UMAP 1", "UMAP 2"]


def _scatter_by_label(ax, coords, spec, targets, dataset, output=0):
    """Colour points by label (regression: by target column ``output``); legend or colour bar named after
    them."""
    from matplotlib.lines import Line2D

    plt = _plt()
    labels = spec.labels or []
    small = {"s": 18, "alpha": 0.8, "linewidths": 0}
    if spec.task == "multiclass" and labels and all(lab.endswith((" major", " minor")) for lab in labels):
        tonics = list(dict.fromkeys(lab.rsplit(" ", 1)[0] for lab in labels))
        for t, tonic in enumerate(tonics):
            for mode, marker in (("major", "o"), ("minor", "^")):
                sel = np.isin(targets, [i for i, lab in enumerate(labels) if lab == f"{tonic} {mode}"])
                ax.scatter(*coords[sel].T, color=plt.cm.hsv(t / len(tonics)), marker=marker, **small)
        handles = [
            Line2D([], [], ls="", marker="s", color=plt.cm.hsv(t / len(tonics)), label=tonic)
            for t, tonic in enumerate(tonics)
        ]
        handles += [
            Line2D([], [], ls="", marker=m, color="grey", label=mode)
            for mode, m in (("major", "o"), ("minor", "^"))
        ]
        ax.legend(
            handles=handles,
            title="tonic / mode",
            fontsize=7,
            ncol=2,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    elif spec.task == "multiclass" and len(labels) <= 20:
        cmap = plt.cm.tab10 if len(labels) <= 10 else plt.cm.tab20
        for i, label in enumerate(labels):
            sel = targets == i
            if sel.any():
                ax.scatter(*coords[sel].T, color=cmap(i), label=label, **small)
        ax.legend(title="label", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5)
    elif spec.task == "multilabel":
        top = np.argsort(-targets.sum(axis=0), kind="stable")[:8]
        # each item in the colour of the commonest of the top tags it carries
        first = np.full(len(targets), -1)
        for rank in reversed(range(len(top))):
            first[targets[:, top[rank]] > 0] = rank
        ax.scatter(*coords[first < 0].T, color="lightgrey", label="none of these", **small)
        for rank, tag in enumerate(top):
            sel = first == rank
            ax.scatter(*coords[sel].T, color=plt.cm.tab10(rank), label=labels[tag], **small)
        ax.legend(
            title="commonest tag carried",
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            markerscale=1.5,
        )
    elif spec.task == "multiclass":
        sc = ax.scatter(*coords.T, c=targets, cmap="viridis", **small)
        ax.figure.colorbar(sc, ax=ax, label="class index")
    else:
        name = spec.output_names[output] if spec.output_names else f"output {output}"
        sc = ax.scatter(*coords.T, c=targets[:, output], cmap="viridis", **small)
        ax.figure.colorbar(sc, ax=ax, label=f"{name} ({UNITS.get(dataset, 'label units')})")


def _projection_figure(row: dict, spec, data, out: Path) -> str:
    """Every split's features in 2-D (at most :data:`MAX_PROJECTED` items), coloured by label."""
    plt = _plt()
    X = np.concatenate([data.X[s] for s in ("train", "valid", "test")])
    targets = np.concatenate([np.asarray(data.targets[s]) for s in ("train", "valid", "test")])
    if len(X) > MAX_PROJECTED:
        keep = np.sort(np.random.default_rng(0).choice(len(X), MAX_PROJECTED, replace=False))
        X, targets = X[keep], targets[keep]
    coords, axes = project_2d(X)
    panels = min(targets.shape[1], 4) if spec.task == "regression" else 1
    fig, axs = plt.subplots(1, panels, figsize=(5.6 * panels, 4.6), squeeze=False)
    for i, ax in enumerate(axs[0]):
        _scatter_by_label(ax, coords, spec, targets, row["dataset"], output=i)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        if spec.task == "regression" and spec.output_names:
            ax.set_title(f"coloured by {spec.output_names[i]}", fontsize=10)
        ax.grid(alpha=0.2)
    method = axes[0].split()[0].replace("PC", "PCA")
    fig.suptitle(
        f"{row['dataset']} / {row['representation']}: {len(X)} items' standardised features, {method}"
    )
    return _save(fig, out / f"proj_{row['dataset']}_{row['representation']}.png")


# ---------------------------------------------------------------- provenance


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")


def feature_provenance(dataset: str, representation: str, layout: Layout | None = None) -> dict:
    """What the folder runner recorded about a feature folder of ``layout``
    (``.jukemir/provenance/<stem>.json``).

    Returns ``{"folder", "features" (number of .npy files), "with_record", "records"
    (each distinct representation/version/options/package/shape with its count), "written"
    ([first, last] record time, ISO 8601 UTC, or None)}``.
    """
    from .representations.folder import STATE_DIR

    folder = (layout or Layout()).representations(dataset, representation)
    counts: dict[str, int] = {}
    times = []
    for path in sorted((folder / STATE_DIR / "provenance").glob("*.json")):
        record = read_json(path)
        key = json.dumps(
            {
                k: record.get(k)
                for k in ("representation", "version", "options", "package", "shape")
                if k in record
            },
            sort_keys=True,
        )
        counts[key] = counts.get(key, 0) + 1
        times.append(path.stat().st_mtime)
    return {
        "folder": str(folder),
        "features": sum(1 for _ in folder.glob("*.npy")),
        "with_record": len(times),
        "records": [dict(json.loads(key), count=n) for key, n in counts.items()],
        "written": [_iso(min(times)), _iso(max(times))] if times else None,
    }


def _provenance(rows: Sequence[dict], layout: Layout) -> dict:
    import matplotlib
    import sklearn
    import torch

    selected = []
    for r in rows:
        run = layout.probes(r["dataset"], r["representation"]) / r["best_uid"]
        selected.append(
            {
                "dataset": r["dataset"],
                "representation": r["representation"],
                "uid": r["best_uid"],
                "num_runs": r["num_runs"],
                "selected_by": f"validation {r['metric']}",
                "trained": _iso((run / "metrics.json").stat().st_mtime),
                "cfg": r["cfg"],
                "train": {k: v for k, v in (r["train"] or {}).items() if k != "valid_curve"},
                "features": feature_provenance(r["dataset"], r["representation"], layout),
            }
        )
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jukemir": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "cache": str(layout.root),
        "selected": selected,
    }


# ---------------------------------------------------------------- the report


def write_report(
    out_dir: str | Path | None = None,
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
    rows: Iterable[dict] | None = None,
    layout: Layout | None = None,
) -> Path:
    """Evaluate every trained dataset x representation of ``layout`` (optionally filtered) and write the
    report.

    Args:
        out_dir: where to write ``index.html``, the PNG figures, ``summary.md``
            and ``results.json``; default ``<layout root>/report``.
        datasets, representations: only these (default: all with finished runs).
        rows: test-split rows already evaluated (then ``datasets`` and
            ``representations`` are not used), read one at a time: the
            :class:`~jukemir.probe.evaluate.Row` s of
            :func:`~jukemir.probe.evaluate.evaluations` bring the probe and data
            they were computed with; for plain rows (dicts) these are read from ``layout``.
        layout: the cache whose runs, features and metadata are reported (default ``Layout()``).

    Returns the path of ``index.html``.
    """
    import matplotlib

    # Labels, file and dataset names are user text: never read "$...$" in them as mathematics.
    with matplotlib.rc_context({"text.parse_math": False}):
        return _write_report(out_dir, datasets, representations, rows, layout or Layout())


def _write_report(out_dir, datasets, representations, rows, layout: Layout) -> Path:
    from .datasets import get_dataset
    from .probe.data import load_probe_data
    from .probe.evaluate import evaluations, results_table
    from .probe.run import load_probe_dir

    out = Path(out_dir) if out_dir else layout.report()
    out.mkdir(parents=True, exist_ok=True)
    if rows is None:
        rows = evaluations(datasets, representations, split="test", layout=layout)
    kept, pairs = [], []
    for row in rows:  # each pair's probe and data are used here, then dropped
        if row["split"] != "test":
            raise ValueError(
                "write_report needs rows evaluated on the test split (evaluate(..., split='test'))"
            )
        spec = get_dataset(row["dataset"], layout)
        probe, data = getattr(row, "probe", None), getattr(row, "data", None)
        if probe is None:
            probe = load_probe_dir(
                layout.probes(row["dataset"], row["representation"]) / row["best_uid"], layout=layout
            )
        if data is None:
            data = load_probe_data(
                row["dataset"], row["representation"], seed=probe.cfg["seed"], verbose=False, layout=layout
            )
        row = dict(row)
        kept.append(row)
        pair = f"{row['dataset']} / {row['representation']}"
        what = {"multiclass": "confusion matrix", "multilabel": "ROC-AUC per tag"}.get(
            spec.task, "predicted vs true"
        )
        caption = f"{pair}: {what} of the selected probe on test"
        if spec.key_clips:
            caption += (
                " (each clip's own prediction; the table's key score is the MIREX weighted score of the "
                "song-level ensemble, so the two numbers differ)"
            )
        figures = [(caption, _prediction_figure(row, spec, probe, data, out))]
        curve = _curve_figure(row, out)
        if curve is not None:
            figures.append((f"{pair}: validation curve of the selected probe", curve))
        figures.append(
            (
                f"{pair}: 2-D projection of the features, coloured by label",
                _projection_figure(row, spec, data, out),
            )
        )
        pairs.append((pair, figures))
        del probe, data
    rows = kept
    comps = comparison_rows(rows)
    sections: list[tuple[str, list[tuple[str, str]]]] = [("Test metric per representation", [])]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        has_paper = any(c["paper"] is not None for c in comps if c["dataset"] == ds)
        caption = f"{ds}: our test metrics (bars)" + (
            " and the paper's (diamonds; hollow: not yet confirmed from the paper)"
            if has_paper
            else " (the paper has no numbers for this dataset)"
        )
        sections[0][1].append((caption, _bar_chart(ds, [c for c in comps if c["dataset"] == ds], out)))
    sections += pairs
    provenance = _provenance(rows, layout)
    paper = paper_results()
    summary = "\n\n".join(
        [
            "# jukemir results",
            results_table(rows),
            "## Beside the paper",
            comparison_table(rows),
            "## Side by side with the paper's six",
            side_by_side_table(rows),
            f"Paper: {paper['source']}",
            f"Generated {provenance['created']} by jukemir {__version__}.",
        ]
    )
    with atomic_write(out / "summary.md", "w") as handle:
        handle.write(summary + "\n")
    write_json(out / "results.json", {"rows": rows, "comparison": comps, "provenance": provenance})
    with atomic_write(out / "index.html", "w") as handle:
        handle.write(_html_page(comps, sections, provenance, paper, _html_side_by_side(rows), layout))
    return out / "index.html"


STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}.unconfirmed{color:#a35200}"
    "table.wide td:nth-child(3){text-align:right}"
    "img{max-width:100%}figure{margin:1.2em 0}figcaption{color:#444;font-size:90%}"
    "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:80%}"
)


def _html_table(comps: Sequence[dict]) -> str:
    head = (
        "<tr><th>dataset</th><th>metric</th><th>representation</th>"
        "<th>ours</th><th>paper</th><th>difference</th></tr>"
    )
    body = []
    for c in comps:
        ours, paper, diff = (html.escape(s) for s in _cells(c))
        if c["paper"] is not None and not c["confirmed"]:
            paper = f'<span class="unconfirmed" title="not yet confirmed from the paper">{paper}</span>'
        body.append(
            f"<tr><td>{html.escape(c['dataset'])}</td><td>{html.escape(c['metric'])}</td>"
            f"<td>{html.escape(c['representation'])}</td><td>{ours}</td><td>{paper}</td><td>{diff}</td></tr>"
        )
    return "<table>" + head + "".join(body) + "</table>"


def _html_side_by_side(rows) -> str:
    table = side_by_side(rows)
    e = html.escape
    head = "".join(
        f"<th>{e(rep)}{' (paper)' if kind == 'paper' else ''}</th>" for rep, kind in table["columns"]
    )
    body = []
    for line, marks in zip(table["lines"], table["marks"]):
        cells = "".join(
            f"<td>{'–' if v is None else f'{v:.1f}{e(m)}'}</td>" for v, m in zip(line["cells"], marks)
        )
        body.append(f"<tr><td>{e(line['dataset'])}</td><td>{e(line['metric'])}</td>{cells}</tr>")
    return f"<table class='wide'><tr><th>dataset</th><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _html_page(comps, sections, provenance, paper, wide: str, layout: Layout) -> str:
    e = html.escape
    body = [
        "<h1>jukemir results</h1>",
        f"<p>Generated {e(provenance['created'])} by jukemir {e(__version__)} "
        f"from the cache {e(provenance['cache'])}.",
        "Each pair's probe is the run with the best validation metric; numbers are test metrics x 100.</p>",
        "<h2>Results beside the paper</h2>",
        _html_table(comps),
        "<p>" + "<br>".join(e(n) for n in _footnotes(comps)) + f"</p><p>Paper: {e(paper['source'])}</p>",
        "<h2>What the metrics mean</h2><ul>"
        + "".join(f"<li>{e(text)}</li>" for text in metric_notes((c["dataset"] for c in comps), layout))
        + "</ul>",
        "<h2>Side by side with the paper's six</h2>",
        wide,
    ]
    for title, figures in sections:
        body.append(f"<h2>{e(title)}</h2>")
        for caption, name in figures:
            body.append(
                f'<figure><img src="{e(name)}" alt="{e(caption)}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
    body.append("<h2>Provenance</h2><pre>" + e(json.dumps(provenance, indent=2, sort_keys=True)) + "</pre>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>jukemir report</title>"
        f"<style>{STYLE}</style>"
        "</head><body>" + "\n".join(body) + "</body></html>\n"
    )
