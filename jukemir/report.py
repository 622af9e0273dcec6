"""Tables and plots: the results beside the paper's, and figures of what the probes learned.

:func:`write_report` evaluates every dataset x representation that has
finished probe runs and writes ``<out>/index.html`` (self-contained apart from
the PNG figures beside it), ``<out>/summary.md`` and ``<out>/results.json``:

* the results table, with the paper's published number beside ours and the
  difference (values not confirmed from the paper PDF are marked ``*``);
* per-dataset bar charts of the headline metric per representation, with the
  paper's numbers as markers;
* for the selected probe of each pair: its validation curve; a confusion matrix (multiclass: genre,
  key), per-tag ROC-AUC (multilabel), predicted-vs-true scatter (regression);
* a 2-D projection of each representation's test features coloured by label
  (PCA; UMAP when ``umap`` is installed);
* provenance: versions, dates, the selected configs and how they trained.

The paper's numbers live in one data file, ``jukemir/data/paper_results.json``
(:func:`paper_results`), which ``reproduce/6_evaluate.sh`` also uses through
``jukemir report``.
"""

from __future__ import annotations

import datetime
import html
import json
import platform
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, cache
from .io import atomic_write, write_json

PAPER_FILE = "paper_results.json"


def paper_results() -> dict:
    """The paper's published numbers: ``{"source", "confirmation", "columns", "results"}``.

    ``results[representation]["<dataset>/<metric>"] = {"value": x100, "confirmation": "listing"|"memory"}``.
    """
    return json.loads(resources.files("jukemir").joinpath("data", PAPER_FILE).read_text())


def comparison_rows(rows: Sequence[dict]) -> list[dict]:
    """One entry per (dataset, representation, headline metric): ours and the paper's (x100), and the difference."""
    paper = paper_results()["results"]
    out = []
    for row in rows:
        for metric in row["headline"]:
            ours = 100 * row[row["split"]][metric]
            published = paper.get(row["representation"], {}).get(f"{row['dataset']}/{metric}")
            out.append({
                "dataset": row["dataset"], "representation": row["representation"], "metric": metric,
                "ours": ours,
                "paper": published["value"] if published else None,
                "confirmed": published["confirmation"] != "memory" if published else None,
                "difference": ours - published["value"] if published else None,
            })  # fmt: skip
    return out


def comparison_table(rows: Sequence[dict]) -> str:
    """Markdown: our test metric, the paper's, and the difference, per dataset x representation x metric."""
    lines = ["| dataset | metric | representation | ours | paper | difference |", "|---|---|---|---:|---:|---:|"]
    for c in comparison_rows(rows):
        paper = "–" if c["paper"] is None else f"{c['paper']:.1f}{'' if c['confirmed'] else '*'}"
        diff = "–" if c["difference"] is None else f"{c['difference']:+.1f}"
        lines.append(f"| {c['dataset']} | {c['metric']} | {c['representation']} | {c['ours']:.1f} | {paper} | {diff} |")
    lines.append("")
    lines.append("Metrics x 100 on the test split. * = paper value not yet confirmed from the paper PDF.")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    with atomic_write(path) as handle:
        handle.write(buf.getvalue())
    return path.name


def _bar_chart(dataset: str, comps: list[dict], out: Path) -> str:
    plt = _plt()
    metrics = list(dict.fromkeys(c["metric"] for c in comps))
    reps = list(dict.fromkeys(c["representation"] for c in comps))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(reps) * len(metrics), 3.6))
    width = 0.8 / len(metrics)
    for j, metric in enumerate(metrics):
        xs = np.arange(len(reps)) + j * width
        ours = [next((c["ours"] for c in comps if c["representation"] == r and c["metric"] == metric), np.nan) for r in reps]
        paper = [next((c["paper"] for c in comps if c["representation"] == r and c["metric"] == metric), None) for r in reps]
        ax.bar(xs, ours, width, label=f"ours: {metric}")
        pts = [(x, p) for x, p in zip(xs, paper) if p is not None]
        if pts:
            ax.scatter(*zip(*pts), marker="D", color="black", zorder=3, label=f"paper: {metric}")
    ax.set_xticks(np.arange(len(reps)) + width * (len(metrics) - 1) / 2, reps)
    ax.set_ylabel("test metric (x100)")
    ax.set_title(f"{dataset}: selected probe per representation")
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / f"bars_{dataset}.png")


def _prediction_figure(row: dict, spec, probe, data, out: Path) -> str:
    """Confusion matrix, per-tag AUC or predicted-vs-true scatter for the selected probe on test."""
    import torch

    plt = _plt()
    logits = probe.logits(data.X["test"]).float().cpu()
    y = np.asarray(data.targets["test"])
    name = f"pred_{row['dataset']}_{row['representation']}.png"
    if spec.task == "multiclass":
        k = spec.num_outputs
        pred = logits.argmax(dim=1).numpy()
        cm = np.zeros((k, k), dtype=int)
        np.add.at(cm, (y.astype(int), pred), 1)
        size = 3 + 0.28 * k
        fig, ax = plt.subplots(figsize=(size, size))
        im = ax.imshow(cm, cmap="Blues")
        labels = spec.labels or [str(i) for i in range(k)]
        ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        ax.set_xlabel("predicted (clip level)")
        ax.set_ylabel("true")
        ax.set_title(f"{row['dataset']} / {row['representation']}: test confusion matrix")
        fig.colorbar(im, ax=ax, fraction=0.046, label="clips")
    elif spec.task == "multilabel":
        from .probe.metrics import roc_auc_per_label

        auc = np.asarray(roc_auc_per_label(torch.as_tensor(y), torch.sigmoid(logits)), dtype=float)
        order = np.argsort(auc)
        fig, ax = plt.subplots(figsize=(6, 2 + 0.16 * len(auc)))
        ax.barh(np.arange(len(auc)), auc[order])
        ax.set_yticks(np.arange(len(auc)), [spec.labels[i] for i in order], fontsize=7)
        ax.set_xlabel("test ROC-AUC per tag")
        ax.set_xlim(min(0.5, np.nanmin(auc)), 1.0)
        ax.set_title(f"{row['dataset']} / {row['representation']}: per-tag ROC-AUC")
    else:
        pred = logits.numpy()
        names = spec.output_names or [f"output {i}" for i in range(pred.shape[1])]
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
        for i, (ax, n) in enumerate(zip(axes[0], names)):
            ax.scatter(y[:, i], pred[:, i], s=10, alpha=0.6)
            lo, hi = float(min(y[:, i].min(), pred[:, i].min())), float(max(y[:, i].max(), pred[:, i].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect")
            ax.set_xlabel(f"true {n} (standardised)")
            ax.set_ylabel(f"predicted {n}")
            ax.set_title(f"{row['representation']}: {n}, R2 = {row['test'].get(f'{n}_r2', float('nan')):.2f}")
            ax.legend(fontsize=8)
    return _save(fig, out / name)


def _curve_figure(row: dict, out: Path) -> str | None:
    """The selected probe's validation metric at each early-stopping evaluation (None if not recorded)."""
    curve = (row.get("train") or {}).get("valid_curve")
    if not curve:
        return None
    plt = _plt()
    steps, scores = zip(*curve)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(steps, scores, lw=1.2, label=f"validation {row['primary']}")
    best = row["train"].get("best_step")
    if best is not None:
        ax.axvline(best, color="k", ls="--", lw=1, label=f"restored: step {best}")
    ax.set_xlabel("training step (minibatch updates)")
    ax.set_ylabel(f"validation {row['primary']}")
    ax.set_title(f"{row['dataset']} / {row['representation']}: selected probe {row['best_uid'][:8]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out / f"curve_{row['dataset']}_{row['representation']}.png")


def _label_colours(spec, targets: np.ndarray) -> tuple[np.ndarray, str]:
    if spec.task == "multiclass":
        return targets.astype(int), "class"
    if spec.task == "multilabel":
        return np.asarray(targets).argmax(axis=1), "index of the first tag present"
    return np.asarray(targets)[:, 0], (spec.output_names or ["output 0"])[0]


def _projection_figure(row: dict, spec, data, out: Path) -> str:
    plt = _plt()
    X = np.asarray(data.X["test"], dtype=np.float64)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    method = "PCA"
    try:
        import umap  # noqa: F401

        coords = umap.UMAP(random_state=0).fit_transform(X)
        method = "UMAP"
    except ImportError:
        _, _, vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
        coords = X @ vt[:2].T
    colour, what = _label_colours(spec, np.asarray(data.targets["test"]))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    discrete = spec.task != "regression"
    sc = ax.scatter(coords[:, 0], coords[:, 1], c=colour, s=12, cmap="tab20" if discrete else "viridis", alpha=0.8)
    cbar = fig.colorbar(sc, ax=ax)
    cbar.set_label(what if not discrete else "label index (" + ", ".join((spec.labels or [])[:3]) + ", ...)")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_title(f"{row['dataset']} / {row['representation']}: test features ({method})")
    return _save(fig, out / f"proj_{row['dataset']}_{row['representation']}.png")


# ---------------------------------------------------------------- the report


def _provenance(rows: Sequence[dict]) -> dict:
    import sklearn
    import torch

    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jukemir": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "cache": str(cache.cache_dir(create=False)),
        "selected": [{"dataset": r["dataset"], "representation": r["representation"], "uid": r["best_uid"],
                      "num_runs": r["num_runs"], "cfg": r["cfg"], "train": r["train"]} for r in rows],  # fmt: skip
    }


def write_report(
    out_dir: str | Path | None = None,
    datasets: Sequence[str] | None = None,
    representations: Sequence[str] | None = None,
) -> Path:
    """Evaluate every trained pair (optionally filtered) and write the report; return ``index.html``'s path.

    ``out_dir`` defaults to ``<cache>/report``.
    """
    from .datasets import get_dataset
    from .probe.evaluate import evaluate, results_table
    from .probe.train import load_probe_data, load_probe_dir

    out = Path(out_dir) if out_dir else cache.cache_dir() / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate(datasets, representations, split="test")
    comps = comparison_rows(rows)
    figures: list[tuple[str, str]] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        figures.append((f"{ds}: test metric per representation (diamonds: the paper)",
                        _bar_chart(ds, [c for c in comps if c["dataset"] == ds], out)))  # fmt: skip
    for row in rows:
        spec = get_dataset(row["dataset"])
        run_dir = cache.probes_dir(row["dataset"], row["representation"], create=False) / row["best_uid"]
        probe = load_probe_dir(run_dir)
        data = load_probe_data(row["dataset"], row["representation"], seed=probe.cfg["seed"])
        figures.append((f"{row['dataset']} / {row['representation']}: selected probe on test",
                        _prediction_figure(row, spec, probe, data, out)))  # fmt: skip
        curve = _curve_figure(row, out)
        if curve is not None:
            figures.append((f"{row['dataset']} / {row['representation']}: validation curve of the selected probe", curve))
        figures.append((f"{row['dataset']} / {row['representation']}: 2-D projection of the features",
                        _projection_figure(row, spec, data, out)))  # fmt: skip
    provenance = _provenance(rows)
    paper = paper_results()
    summary = "\n\n".join([
        "# jukemir results", results_table(rows), "## Beside the paper", comparison_table(rows),
        f"Paper: {paper['source']}", f"Generated {provenance['created']} by jukemir {__version__}.",
    ])  # fmt: skip
    with atomic_write(out / "summary.md", "w") as handle:
        handle.write(summary + "\n")
    write_json(out / "results.json", {"rows": rows, "comparison": comps, "provenance": provenance})
    body = [
        "<h1>jukemir results</h1>",
        f"<p>Generated {html.escape(provenance['created'])} by jukemir {__version__}; cache {html.escape(provenance['cache'])}.</p>",
        "<h2>Results beside the paper</h2>",
        _html_table(comps),
        f"<p>* = paper value not yet confirmed from the paper PDF. Source: {html.escape(paper['source'])}</p>",
        "<h2>Figures</h2>",
    ]
    for caption, name in figures:
        body.append(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>')
    body.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(provenance, indent=2, sort_keys=True)) + "</pre>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>jukemir report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
            "img{max-width:100%}figure{margin:1.5em 0}</style></head><body>" + "\n".join(body) + "</body></html>")  # fmt: skip
    with atomic_write(out / "index.html", "w") as handle:
        handle.write(page)
    return out / "index.html"


def _html_table(comps: list[dict]) -> str:
    head = "<tr><th>dataset</th><th>metric</th><th>representation</th><th>ours</th><th>paper</th><th>difference</th></tr>"
    cells = []
    for c in comps:
        paper = "–" if c["paper"] is None else f"{c['paper']:.1f}{'' if c['confirmed'] else '*'}"
        diff = "–" if c["difference"] is None else f"{c['difference']:+.1f}"
        cells.append(f"<tr><td>{html.escape(c['dataset'])}</td><td>{c['metric']}</td><td>{html.escape(c['representation'])}</td>"
                     f"<td>{c['ours']:.1f}</td><td>{paper}</td><td>{diff}</td></tr>")  # fmt: skip
    return "<table>" + head + "".join(cells) + "</table>"
