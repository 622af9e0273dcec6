"""The original's training loop, one config at a time (``jukemir probe --serial``).

Training (docs/probes.md), for every config: seed Python's ``random`` and
torch, build :class:`~jukemir.probe.model.SimpleMLP`, Adam with coupled L2,
z-score features with training statistics, then loop: stop if past
``max_num_epochs`` (keeping the current weights); every
``early_stopping_eval_frequency`` steps, stop if the validation score has not
improved for ``early_stopping_boredom`` evaluations (restoring the best
weights), else evaluate; then one minibatch update drawn with
``random.sample``. The stopping rules here (:func:`check_termination`,
:func:`validation_score`) are also the stacked trainer's (:mod:`.stack`).
"""

from __future__ import annotations

import itertools
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..device import cpu_threads_for, torch_device
from ..errors import UserError
from .config import ProbeConfig
from .data import ProbeData
from .metrics import compute_metrics
from .model import SimpleMLP
from .run import Probe
from .scaler import Scaler


def check_termination(cfg) -> None:
    """Refuse a config that would never stop (the original's check)."""
    if not cfg["early_stopping"] and cfg["max_num_epochs"] is None:
        raise UserError(
            f"config {cfg.uid()}: No termination criteria specified (early_stopping or max_num_epochs)"
        )


def validation_score(cfg, metrics: dict, where: str) -> float:
    """The config's early-stopping score in validation ``metrics`` (higher is better); NaN: an error naming
    ``where``."""
    name = cfg["early_stopping_metric"]
    score = -metrics[name[1:]] if name.startswith("-") else metrics[name]
    if np.isnan(score):
        raise FloatingPointError(f"{where}: validation {name} is NaN")
    return float(score)


def _loss(task: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "multiclass":
        return F.cross_entropy(logits, y)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.mse_loss(logits, y)


def train_probe(cfg, data: ProbeData, device=None) -> Probe:
    """Train one probe exactly as the original's ``ProbeExperiment.train`` (docs/probes.md).

    Seeds Python's ``random`` stream and torch's global RNG with the config's
    seed, so on the original's device type the run matches it step for step.
    ``data`` is reordered to the config's seed if needed. Returns the trained
    :class:`Probe` (best weights restored when early stopping ended the run).
    """
    cfg = ProbeConfig(cfg)
    check_termination(cfg)
    seed = cfg["seed"]
    data = data.reordered(seed)
    device = torch_device(device)
    start = time.time()
    rng = random.Random(seed) if seed is not None else random.Random()
    if seed is not None:
        torch.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
    spec = data.spec
    model = SimpleMLP(
        data.num_features,
        cfg["hidden_layer_sizes"],
        spec.num_outputs,
        dropout_input=cfg["dropout_input"],
        dropout_p=cfg["dropout_p"],
    ).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg["learning_rate"], weight_decay=cfg["l2_weight_decay"] or 0
    )
    scaler = Scaler.fit(data.X["train"], cfg["data_standardization"])
    X_train = torch.as_tensor(scaler.transform(data.X["train"]), device=device)  # row-wise, so = per batch
    y_train = torch.as_tensor(data.targets["train"], device=device)
    n = X_train.shape[0]
    probe = Probe(cfg, spec, scaler, model)  # evaluates in eval mode; training switches back
    model.train()
    metric = cfg["early_stopping_metric"].lstrip("-")

    step, best, boredom, best_state, best_step = 0, float("-inf"), 0, None, None
    curve = []  # [step, validation score] at each evaluation: the report plots it
    stopped_by = "early_stopping"
    with cpu_threads_for(device, macs_per_update(cfg, data)):
        while True:
            epoch = step * cfg["batch_size"] / n
            if cfg["max_num_epochs"] is not None and epoch > cfg["max_num_epochs"]:
                stopped_by = "max_num_epochs"
                break
            if cfg["early_stopping"] and step % cfg["early_stopping_eval_frequency"] == 0:
                if boredom >= cfg["early_stopping_boredom"]:
                    if best_state is not None:
                        model.load_state_dict(best_state)
                    break
                model.eval()
                metrics = compute_metrics(
                    spec,
                    probe.logits(data.X["valid"]),
                    data.targets["valid"],
                    data.uids["valid"],
                    names=[metric],
                )
                model.train()
                score = validation_score(
                    cfg, metrics, f"{data.dataset}/{data.representation} {cfg.uid()} step {step}"
                )
                curve.append([step, score])
                if score > best:
                    best, boredom, best_step = score, 0, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    boredom += 1
            idxs = rng.sample(range(n), min(cfg["batch_size"], n))
            loss = _loss(spec.task, model(X_train[idxs]), y_train[idxs])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    model.eval()
    probe.info = run_info(
        "serial", device, step, best_step, best, stopped_by, time.time() - start, valid_curve=curve
    )
    return probe


def run_info(trainer, device, steps, best_step, best_score, stopped_by, seconds, **extra) -> dict:
    """What a run records about its training (``Probe.info``, saved as train.json)."""
    return dict(
        trainer=trainer,
        device=str(device),
        steps=steps,
        best_step=best_step,
        best_score=None if best_step is None else best_score,
        stopped_by=stopped_by,
        seconds=round(seconds, 3),
        **extra,
    )


def macs_per_update(cfg, data: ProbeData) -> int:
    """Multiply-adds of one config's minibatch update (forward and backward, about 3x the forward)."""
    sizes = [data.num_features, *cfg["hidden_layer_sizes"], data.spec.num_outputs]
    return 3 * cfg["batch_size"] * sum(a * b for a, b in itertools.pairwise(sizes))
