"""Probes: small models trained on frozen features to measure what they encode (docs/probes.md).

* :mod:`.config` — :class:`~.config.ProbeConfig`, the original's 15 fields and run uid.
* :mod:`.grid` — the paper's 216-config grid and a small demo grid.
* :mod:`.model` — :class:`~.model.SimpleMLP`.
* :mod:`.metrics` — per-task metrics, for one probe or many at once.
* :mod:`.data` — features and targets of a dataset x representation; the non-finite policy.
* :mod:`.scaler` — z-scoring with training statistics.
* :mod:`.run` — a trained :class:`~.run.Probe` and its run folder (save, load, finished?).
* :mod:`.serial` — the original's training loop, one config at a time.
* :mod:`.stack` — many configs at once as stacked tensors (hand-written backward pass).
* :mod:`.adam` — Adam over a stack's per-config parameters (torch's fused kernel, or torch.optim.Adam).
* :mod:`.train` — :func:`~.train.train_grid`, what ``jukemir probe`` runs: resume, claims, executors.
* :mod:`.evaluate` — best run on validation, its test metrics, the results table.
"""
