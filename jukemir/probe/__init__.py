"""Probes: small models trained on frozen features to measure what they encode (docs/probes.md).

* :mod:`.config` — :class:`~.config.ProbeConfig`, the original's 15 fields and run uid.
* :mod:`.model` — :class:`~.model.SimpleMLP`.
* :mod:`.metrics` — per-task metrics, for one probe or many at once.
* :mod:`.train` — data loading, the original's training loop, the vectorised grid trainer,
  save/load (:func:`~.train.train_grid` is what ``jukemir probe`` runs).
* :mod:`.grid` — the paper's 216-config grid and a small demo grid.
* :mod:`.evaluate` — best run on validation, its test metrics, the results table.
"""
