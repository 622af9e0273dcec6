"""Import a user's dataset: a folder of audio and a labels CSV -> ``processed/<name>/``.

The CSV has a header row and these columns:

* ``file`` (required): the audio file, relative to the audio folder (or absolute);
* ``id`` (optional): the item's uid; default: the file name without extension;
* the label column(s), ``label`` unless named otherwise:
  ``multiclass``: one class name; ``multilabel``: tags separated by ``;``;
  ``regression``: one or more numeric columns (e.g. ``--label-column arousal,valence``);
* the split column (optional, named by ``split_column``): ``train``, ``valid``,
  ``test``, or empty (the item is kept in meta.json but in no split).

Without a split column the items are shuffled with ``numpy.random.default_rng(seed)``
and cut by the given ratios (default 80/10/10).

The result is the same layout as a built-in benchmark: ``wav/<uid>.wav`` (mono,
16-bit, the file's own rate), ``meta.json`` and ``dataset.json`` (the
:class:`DatasetSpec`, from which :func:`jukemir.datasets.get_dataset` learns the
task and labels), so extract, probe and evaluate work on it unchanged.
"""

from __future__ import annotations

import csv
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cache import check_name
from ..errors import UserError, one_line
from . import BUILTIN, SPLITS, TASKS, DatasetSpec
from .process import ProcessReport, Source, write_processed

PRIMARY_METRIC = {"multiclass": "accuracy", "multilabel": "auc_roc", "regression": "r2"}
TAG_SEPARATOR = ";"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class LabelsError(UserError):
    """A problem in the labels CSV; ``str()`` is one line naming the file and row."""


def parse_split(text: str) -> tuple[float, float, float]:
    """``"80/10/10"`` -> (80.0, 10.0, 10.0): train/valid/test proportions."""
    try:
        parts = tuple(float(p) for p in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p < 0 or not math.isfinite(p) for p in parts) or parts[0] <= 0 or parts[1] <= 0:
        raise UserError(
            "--split must be TRAIN/VALID/TEST proportions with train and valid > 0, "
            f"e.g. 80/10/10; got {text!r}"
        )
    return parts


def random_splits(uids: Sequence[str], proportions: Sequence[float], seed: int = 0) -> dict[str, str]:
    """Shuffle the sorted ``uids`` with ``default_rng(seed)`` and cut them by train/valid/test
    ``proportions``.

    Every split with a non-zero proportion gets at least one item when there are enough.
    """
    uids = sorted(uids)
    n, total = len(uids), float(sum(proportions))
    sizes = [int(round(n * p / total)) for p in proportions]
    for i in (1, 2):
        if proportions[i] > 0 and sizes[i] == 0 and n >= 3:
            sizes[i] = 1
    sizes[0] = n - sizes[1] - sizes[2]
    if sizes[0] < 1:
        raise UserError(f"{n} items are too few to split {'/'.join(f'{p:g}' for p in proportions)}")
    order = np.random.default_rng(seed).permutation(n)
    names = ["train"] * sizes[0] + ["valid"] * sizes[1] + ["test"] * sizes[2]
    return {uids[i]: names[k] for k, i in enumerate(order)}


def read_labels(
    labels_csv: str | Path,
    audio_dir: str | Path,
    task: str,
    *,
    label_columns: Sequence[str] = ("label",),
    split_column: str | None = None,
) -> tuple[dict, dict[str, Path]]:
    """Validate the CSV against the audio folder; return (uid -> record, uid -> audio path).

    Records are ``{"split": ... or None (filled in later without a split column),
    "y": class | [tags] | [numbers], "extra": {"file": ...}}``. Raises
    :class:`LabelsError` (one line, naming the file and row) on: a missing or
    unknown column, an empty file cell, a missing audio file, a duplicate id, an
    id that cannot be a file name, an empty or non-numeric label, a bad split.
    """
    if task not in TASKS:
        raise UserError(f"--task must be one of {TASKS}, got {task!r}")
    labels_csv, audio_dir = Path(labels_csv), Path(audio_dir)
    if not labels_csv.is_file():
        raise LabelsError(f"{labels_csv}: labels file not found")
    if not audio_dir.is_dir():
        raise LabelsError(f"{audio_dir}: audio folder not found")
    label_columns = list(label_columns)
    if task != "regression" and len(label_columns) != 1:
        raise UserError(f"a {task} dataset has one label column, got {label_columns}")
    known = ["file", "id", *label_columns, *([split_column] if split_column else [])]
    try:
        rows, columns = _read_csv(labels_csv, known, label_columns, split_column)
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{labels_csv}: not UTF-8 text (byte {exc.start}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise LabelsError(f"{labels_csv}: not a readable CSV ({one_line(exc)})") from None
    return _records(rows, labels_csv, audio_dir, task, label_columns, split_column)


def _read_csv(labels_csv: Path, known: list, label_columns: list, split_column) -> tuple[list, list]:
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, strict=True)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise LabelsError(f"{labels_csv}: empty file, expected a header row with {', '.join(known)}")
        for column in columns:
            if column not in known:
                raise LabelsError(f"{labels_csv}: unknown column {column!r} (expected {', '.join(known)})")
        for column in ["file", *label_columns, *([split_column] if split_column else [])]:
            if column not in columns:
                raise LabelsError(f"{labels_csv}: no {column!r} column (columns: {', '.join(columns)})")
        rows = []
        for row in reader:
            if None in row:
                raise LabelsError(
                    f"{labels_csv} line {reader.line_num}: more fields than the header's {len(columns)}"
                )
            rows.append(({k.strip(): (v or "").strip() for k, v in row.items()}, reader.line_num))
    if not rows:
        raise LabelsError(f"{labels_csv}: no rows after the header")
    return rows, columns


def _label_text(value: str, where: str, column: str) -> str:
    """A label as one canonical string (Unicode NFC, so 'é' typed two ways is one class); no control
    characters."""
    value = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise LabelsError(f"{where}: label {value!r} in column {column!r} contains a control character")
    return value


def _records(rows, labels_csv, audio_dir, task, label_columns, split_column) -> tuple[dict, dict[str, Path]]:
    meta, sources, first_line = {}, {}, {}
    for row, line in rows:
        where = f"{labels_csv} line {line}"
        if not row.get("file"):
            raise LabelsError(f"{where}: empty 'file'")
        path = Path(row["file"]) if Path(row["file"]).is_absolute() else audio_dir / row["file"]
        if not path.is_file():
            raise LabelsError(f"{where}: audio file {row['file']!r} not found in {audio_dir}")
        uid = row.get("id") or Path(row["file"]).stem
        if not _NAME.match(uid):
            raise LabelsError(f"{where}: id {uid!r} cannot be a file name (letters, digits, _ . - only)")
        if uid in first_line:
            hint = "" if row.get("id") else "; add an 'id' column"
            raise LabelsError(f"{where}: duplicate id {uid!r} (first on line {first_line[uid]}){hint}")
        first_line[uid] = line
        values = [row.get(c, "") for c in label_columns]
        for column, value in zip(label_columns, values):
            if not value:
                raise LabelsError(f"{where}: empty label in column {column!r}")
        if task == "multiclass":
            y = _label_text(values[0], where, label_columns[0])
        elif task == "multilabel":
            tags = (_label_text(t.strip(), where, label_columns[0]) for t in values[0].split(TAG_SEPARATOR))
            y = sorted({t for t in tags if t})
            if not y:
                raise LabelsError(f"{where}: empty label in column {label_columns[0]!r}")
        else:
            y = []
            for column, value in zip(label_columns, values):
                try:
                    number = float(value)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    raise LabelsError(f"{where}: {value!r} in column {column!r} is not a finite number")
                y.append(number)
        split = None
        if split_column:
            split = row.get(split_column) or None
            if split not in (*SPLITS, None):
                raise LabelsError(
                    f"{where}: split {split!r} in column {split_column!r} is not train, valid, test or empty"
                )
        meta[uid] = {"split": split, "y": y, "extra": {"file": row["file"]}}
        sources[uid] = path
    return meta, sources


def dataset_spec(name: str, task: str, meta: dict, label_columns: Sequence[str]) -> DatasetSpec:
    """The DatasetSpec of an imported dataset: labels sorted (classes or tags) or regression targets."""
    if task == "multiclass":
        labels = sorted({rec["y"] for rec in meta.values()})
        if len(labels) < 2:
            raise UserError(f"dataset {name}: a multiclass task needs at least 2 classes, found {labels}")
        return DatasetSpec(
            name, task, labels, len(labels), PRIMARY_METRIC[task], description=f"imported {task}"
        )
    if task == "multilabel":
        labels = sorted({tag for rec in meta.values() for tag in rec["y"]})
        return DatasetSpec(
            name, task, labels, len(labels), PRIMARY_METRIC[task], description=f"imported {task}"
        )
    return DatasetSpec(
        name,
        task,
        None,
        len(label_columns),
        PRIMARY_METRIC[task],
        output_names=list(label_columns),
        description=f"imported {task}",
    )


def import_dataset(
    name: str,
    audio_dir: str | Path,
    labels_csv: str | Path,
    task: str,
    *,
    label_columns: Sequence[str] = ("label",),
    split_column: str | None = None,
    split: str | Sequence[float] = "80/10/10",
    seed: int = 0,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ProcessReport:
    """Validate, split and convert a user dataset into ``processed/<name>/{wav/, meta.json, dataset.json}``.

    Audio is decoded with :func:`jukemir.audio.load_audio` (mono, native rate)
    and written as 16-bit WAVs; valid WAVs from an earlier run are kept unless
    ``overwrite``. ``dataset.json`` and ``meta.json`` are written only when
    every file converted.
    """
    check_name(name, "dataset name")
    if name in BUILTIN:
        raise UserError(f"dataset name {name!r} is a built-in dataset; choose another")
    meta, paths = read_labels(
        labels_csv, audio_dir, task, label_columns=label_columns, split_column=split_column
    )
    if not split_column:
        proportions = parse_split(split) if isinstance(split, str) else tuple(split)
        for uid, s in random_splits(list(meta), proportions, seed).items():
            meta[uid]["split"] = s
    for required in ("train", "valid"):
        if not any(rec["split"] == required for rec in meta.values()):
            raise UserError(
                f"{labels_csv}: no item in the {required!r} split; the probe needs train and valid"
            )
    spec = dataset_spec(name, task, meta, label_columns)
    sources = {uid: Source(path) for uid, path in paths.items()}
    return write_processed(
        name, meta, sources, jobs=jobs, progress=progress, overwrite=overwrite, spec=spec.to_json()
    )
