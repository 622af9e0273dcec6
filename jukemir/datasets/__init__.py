"""Registry of datasets: ``name -> DatasetSpec`` (task type, label list, primary metric).

Every processed dataset is a folder ``processed/<name>/`` with ``wav/<uid>.wav``
and one ``meta.json`` mapping uid -> ``{"split": "train"|"valid"|"test"|null,
"y": label(s) or numbers, "clip": {...}, "extra": {...}}`` (the original's
schema, docs/datasets.md). Datasets imported by a user
(:mod:`jukemir.datasets.custom`) also write ``processed/<name>/dataset.json``,
from which :func:`get_dataset` learns their task and labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..cache import Layout
from ..errors import NotFoundError, UserError
from ..io import read_json

TASKS = ("multiclass", "multilabel", "regression")
SPLITS = ("train", "valid", "test")

GTZAN_GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]

# Probe order: index = pitch class + 12 * minor (docs/datasets.md).
KEY_TONICS = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
KEYS = [f"{t} major" for t in KEY_TONICS] + [f"{t} minor" for t in KEY_TONICS]

# MagnaTagATune's top 50, in probe label order (docs/datasets.md).
MTT_TOP50 = [
    "guitar",
    "classical",
    "slow",
    "techno",
    "strings",
    "drums",
    "electronic",
    "rock",
    "fast",
    "piano",
    "ambient",
    "beat",
    "violin",
    "vocal",
    "synth",
    "female",
    "indian",
    "opera",
    "male",
    "singing",
    "vocals",
    "no vocals",
    "harpsichord",
    "loud",
    "quiet",
    "flute",
    "woman",
    "male vocal",
    "no vocal",
    "pop",
    "soft",
    "sitar",
    "solo",
    "man",
    "classic",
    "choir",
    "voice",
    "new age",
    "dance",
    "male voice",
    "female vocal",
    "beats",
    "harp",
    "cello",
    "no voice",
    "weird",
    "country",
    "metal",
    "female voice",
    "choral",
]


@dataclass(frozen=True)
class DatasetSpec:
    """What a probe needs to know about a dataset.

    Attributes:
        name: registry key (also the folder name under ``processed/``).
        task: ``multiclass`` (one label), ``multilabel`` (a list of tags) or
            ``regression`` (a list of numbers).
        labels: class/tag names in output order (``None`` for regression).
        num_outputs: probe output size.
        primary: the metric that selects probes on validation.
        key_clips: multiclass over the 24 keys, scored with the MIREX weighted
            key score after song-level ensembling of clips (uid ``<song>-<clip>``).
        output_names: names of the regression targets.
        description: one line for humans.
    """

    name: str
    task: str
    labels: list | None
    num_outputs: int
    primary: str
    key_clips: bool = False
    output_names: list | None = None
    description: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise UserError(f"dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        if self.labels is not None and len(self.labels) != self.num_outputs:
            raise UserError(
                f"dataset {self.name!r}: {len(self.labels)} labels but num_outputs={self.num_outputs}"
            )

    def to_json(self) -> dict:
        return asdict(self)


BUILTIN: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "gtzan_ff",
            "multiclass",
            GTZAN_GENRES,
            10,
            "accuracy",
            description="GTZAN genre, fault-filtered split (443/197/290)",
        ),
        DatasetSpec(
            "giantsteps_clips",
            "multiclass",
            KEYS,
            24,
            "score",
            key_clips=True,
            description="GiantSteps key, 30 s clips, MIREX weighted score",
        ),
        DatasetSpec(
            "magnatagatune",
            "multilabel",
            MTT_TOP50,
            50,
            "auc_roc",
            description="MagnaTagATune top-50 tags, macro ROC-AUC and AP",
        ),
        DatasetSpec(
            "emomusic",
            "regression",
            None,
            2,
            "r2",
            output_names=["arousal", "valence"],
            description="Emomusic static arousal and valence, R2",
        ),
        DatasetSpec(
            "synthetic",
            "multiclass",
            KEYS,
            24,
            "score",
            key_clips=True,
            description="generated chords and melodies in 24 keys (no download)",
        ),
        DatasetSpec(
            "test",
            "multiclass",
            ["0", "1", "2", "3"],
            4,
            "accuracy",
            description="unit-test dataset of the original",
        ),
    ]
}

SPEC_FILE = "dataset.json"


def get_dataset(name: str, layout: Layout | None = None) -> DatasetSpec:
    """Return the spec of ``name``: a built-in, or one imported into ``processed/<name>/`` of ``layout``
    (default ``Layout()``)."""
    if name in BUILTIN:
        return BUILTIN[name]
    spec_path = (layout or Layout()).processed(name) / SPEC_FILE
    if spec_path.exists():
        fields = read_json(spec_path)
        try:
            return DatasetSpec(**fields)
        except TypeError as exc:  # not an object, or a missing or unknown field
            raise UserError(f"{spec_path}: not a dataset spec ({exc})") from None
    known = ", ".join(BUILTIN)
    raise UserError(f"unknown dataset {name!r}: not one of {known} and no {spec_path}")


def is_file_name(uid) -> bool:
    """Whether ``uid`` can be one file name in a folder (the features of an item are ``<uid>.npy``)."""
    return (
        isinstance(uid, str)
        and 0 < len(uid) <= 200
        and "/" not in uid
        and not uid.startswith(".")
        and all(ch.isprintable() for ch in uid)
    )


def load_meta(name: str, layout: Layout | None = None) -> dict:
    """Read ``processed/<name>/meta.json`` of ``layout`` (uid -> record); a clear error when it is missing."""
    path = (layout or Layout()).meta(name)
    if not path.exists():
        raise NotFoundError(f"{path}: no meta.json for dataset {name!r}; process or generate it first")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object mapping uid -> record")
    for uid, rec in meta.items():
        if not is_file_name(uid):
            raise UserError(
                f"{path}: uid {uid!r} cannot name a file (no '/', no leading '.', no control characters)"
            )
        if not isinstance(rec, dict) or "y" not in rec:
            raise UserError(f"{path}: record {uid!r} has no 'y'")
        if rec.get("split") not in (*SPLITS, None):
            raise UserError(f"{path}: record {uid!r} has split {rec.get('split')!r}")
    return meta


__all__ = [
    "DatasetSpec",
    "BUILTIN",
    "TASKS",
    "SPLITS",
    "KEYS",
    "GTZAN_GENRES",
    "MTT_TOP50",
    "get_dataset",
    "load_meta",
]
