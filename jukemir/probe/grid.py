"""Hyper-parameter grids of probe configs (docs/probes.md).

A grid maps config fields to lists of values; :func:`grid_cfgs` returns the
Cartesian product in the grid's insertion order (the last field varies
fastest). ``paper`` is the paper's 216-config grid; ``demo`` is a 12-config
grid that trains in seconds on small features.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..cache import Layout
from ..errors import UserError
from ..io import write_json
from .config import ProbeConfig

PAPER_GRID = {
    "data_standardization": [False, True],
    "hidden_layer_sizes": [[], [512]],
    "batch_size": [64, 256],
    "learning_rate": [1e-5, 1e-4, 1e-3],
    "dropout_p": [0.25, 0.5, 0.75],
    "l2_weight_decay": [None, 1e-4, 1e-3],
}

# A 12-config corner of the paper's grid: linear and one-hidden-layer probes at
# its two faster learning rates and three dropouts (standardised, batch 64, no
# weight decay), with a patience of 32 evaluations (256 updates) instead of the
# paper's 256: a few seconds per representation on a few hundred examples, with
# the same ranking of representations (the synthetic test scores move by ~2 points).
DEMO_GRID = {
    "hidden_layer_sizes": [[], [512]],
    "learning_rate": [1e-4, 1e-3],
    "dropout_p": [0.25, 0.5, 0.75],
    "early_stopping_boredom": [32],
}

GRIDS = {"paper": PAPER_GRID, "demo": DEMO_GRID}


def grid_cfgs(dataset: str, representation: str, grid: dict) -> list[ProbeConfig]:
    """Every combination of ``grid``'s values as a :class:`ProbeConfig`; ``{}`` gives ``[]``."""
    if not grid:
        return []
    fields = list(grid)
    return [
        ProbeConfig(dataset=dataset, representation=representation, **dict(zip(fields, values)))
        for values in itertools.product(*(grid[f] for f in fields))
    ]


def named_grid_cfgs(dataset: str, representation: str, name: str = "paper") -> list[ProbeConfig]:
    """The configs of a named grid (``paper``: 216 configs; ``demo``: 12)."""
    if name not in GRIDS:
        raise UserError(f"unknown grid {name!r}; expected one of {sorted(GRIDS)}")
    return grid_cfgs(dataset, representation, GRIDS[name])


def paper_grid_cfgs(dataset: str, representation: str) -> list[ProbeConfig]:
    """The paper's 216 configs for one dataset x representation."""
    return grid_cfgs(dataset, representation, PAPER_GRID)


def write_grid_configs(cfgs, root: str | Path | None = None) -> list[Path]:
    """Write each config to ``<root>/<dataset>/<representation>/<uid>.json`` (root: ``Layout().probes()``)."""
    root = Path(root) if root is not None else Layout().probes()
    paths = []
    for cfg in cfgs:
        cfg = ProbeConfig(cfg)
        path = root / cfg["dataset"] / cfg["representation"] / f"{cfg.uid()}.json"
        write_json(path, dict(cfg))
        paths.append(path)
    return paths
