"""``ProbeConfig``: the original's 15 probe hyper-parameters and their uid (docs/probes.md).

A config is a ``dict`` (so ``json.dumps(cfg)`` is the config file) holding
every field, defaults filled in, in the original's order. Its :meth:`uid` is
the sha1 of ``json.dumps(cfg, indent=2, sort_keys=True)``, so a run here and a
run of the original with the same settings share a folder name.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..errors import UserError

DEFAULTS = {
    "dataset": None,
    "representation": None,
    "data_standardization": True,
    "hidden_layer_sizes": [],
    "batch_size": 64,
    "learning_rate": 1e-3,
    "dropout_input": True,
    "dropout_p": 0.5,
    "l2_weight_decay": None,
    "max_num_epochs": None,
    "early_stopping_metric": "primary",
    "early_stopping": True,
    "early_stopping_eval_frequency": 8,
    "early_stopping_boredom": 256,
    "seed": 0,
}
REQUIRED = ("dataset", "representation")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# field -> (check, what is expected); checked after the original's three checks.
_CHECKS = {
    "dataset": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "representation": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "data_standardization": (lambda v: isinstance(v, bool), "true or false"),
    "hidden_layer_sizes": (
        lambda v: isinstance(v, list) and all(_is_int(h) and h > 0 for h in v),
        "a list of positive integers",
    ),
    "batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "dropout_input": (lambda v: isinstance(v, bool), "true or false"),
    "dropout_p": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "l2_weight_decay": (lambda v: v is None or (_is_number(v) and v >= 0), "null or a number >= 0"),
    "max_num_epochs": (lambda v: v is None or (_is_number(v) and v > 0), "null or a positive number"),
    "early_stopping_metric": (lambda v: isinstance(v, str) and v.lstrip("-") != "", "a metric name"),
    "early_stopping": (lambda v: isinstance(v, bool), "true or false"),
    "early_stopping_eval_frequency": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "early_stopping_boredom": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: v is None or _is_int(v), "null or an integer"),
}


class ProbeConfig(dict):
    """The hyper-parameters of one probe run; every field present, defaults filled in.

    Raises ``ValueError`` with the original's messages ("Required field ...
    missing", "Unknown field ... specified", "All values must be
    JSON-serializable"), then for a value of the wrong kind (naming the field
    and what it expects).
    """

    def __init__(self, *args, **kwargs):
        given = dict(*args, **kwargs)
        for name in REQUIRED:
            if name not in given:
                raise UserError(f"Required field {name} missing")
        for name in given:
            if name not in DEFAULTS:
                raise UserError(f"Unknown field {name} specified")
        super().__init__((name, given.get(name, default)) for name, default in DEFAULTS.items())
        try:
            json.dumps(self)
        except (TypeError, ValueError):
            raise UserError("All values must be JSON-serializable") from None
        for name, (check, expected) in _CHECKS.items():
            if not check(self[name]):
                raise UserError(f"probe config field {name!r} must be {expected}, got {self[name]!r}")

    def uid(self) -> str:
        """sha1 hex of the sorted, indented JSON of all 15 fields (the original's run id)."""
        return hashlib.sha1(json.dumps(self, indent=2, sort_keys=True).encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The config file text: indent 2, sorted keys (as the original writes it)."""
        return json.dumps(self, indent=2, sort_keys=True)


def load_config(path: str | os.PathLike) -> ProbeConfig:
    """Read a config JSON file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return ProbeConfig(json.load(handle))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
