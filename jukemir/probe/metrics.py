"""Probe metrics per task (docs/probes.md), for one probe or many at once.

Every function takes model outputs with optional leading axes, e.g. logits of
shape ``(N, K)`` for one probe or ``(C, N, K)`` for ``C`` probes evaluated on
the same ``N`` examples, and returns one value per probe (float64). They are
written in torch so that a grid of probes on a GPU is scored where it lives.

Tasks and metrics:

* multiclass: ``accuracy``; primary ``accuracy``.
* multilabel: macro ``auc_roc`` and ``ap`` on sigmoid probabilities (equal to
  sklearn's ``roc_auc_score`` / ``average_precision_score`` with
  ``average="macro"``, ties included); primary ``auc_roc``.
* regression: ``r2`` (mean of the per-output R², sklearn's uniform average)
  and ``<output>_r2`` per output; primary ``r2``.
* key (24 keys, clips ``<song>-<clip>``): clip metrics, four song-level
  ensembles (``vote``, ``max``, ``gmean``, ``mean``) scored with the MIREX
  weighted key score (``mir_eval.key.weighted_score``); ``accuracy`` and
  ``score`` are those of the ensemble that scores best on validation; primary
  ``score``.

All tasks also report ``loss`` (the training loss on the whole split) and
``primary``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

ENSEMBLES = ("vote", "max", "gmean", "mean")
_CHUNK_ELEMENTS = 1 << 23  # bound on the temporaries of the rank-based metrics


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)


def _out(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


# ---------------------------------------------------------------- losses
def task_loss(task: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The training loss (mean over the split), one per probe: ``(..., N, K) -> (...)``.

    ``targets``: class ids ``(N,)`` (multiclass), 0/1 ``(N, K)`` (multilabel)
    or floats ``(N, K)`` (regression).
    """
    if task == "multiclass":
        logp = F.log_softmax(logits, dim=-1)
        picked = logp.gather(-1, targets.long().expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return -picked.mean(-1)
    if task == "multilabel":
        target = targets.to(logits.dtype).expand(logits.shape)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    if task == "regression":
        return (logits - targets.to(logits.dtype)).square().mean((-2, -1))
    raise UserError(f"unknown task {task!r}")


def loss_gradient(task: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d(:func:`task_loss`)/d(logits) for a minibatch: ``(..., B, K)`` -> same shape."""
    if task == "multiclass":
        # the softmax by hand: torch.softmax is several times slower on CPU for a last dimension of ~10
        grad = (logits - logits.amax(-1, keepdim=True)).exp_()
        grad /= grad.sum(-1, keepdim=True)
        grad.scatter_add_(
            -1,
            targets.long().expand(logits.shape[:-1]).unsqueeze(-1),
            torch.full(grad.shape[:-1] + (1,), -1.0, dtype=grad.dtype, device=grad.device),
        )
        return grad / logits.shape[-2]
    if task == "multilabel":
        return (torch.sigmoid(logits) - targets.to(logits.dtype)) / (logits.shape[-2] * logits.shape[-1])
    if task == "regression":
        return 2.0 * (logits - targets.to(logits.dtype)) / (logits.shape[-2] * logits.shape[-1])
    raise UserError(f"unknown task {task!r}")


# ---------------------------------------------------------------- multiclass
def accuracy(y: torch.Tensor, logits: torch.Tensor) -> np.ndarray:
    """Fraction of ``argmax(logits) == y``: y ``(N,)`` ints, logits ``(..., N, K)`` -> ``(...)``."""
    y = _as_tensor(y, device=logits.device)
    return _out((logits.argmax(-1) == y).double().mean(-1))


# ---------------------------------------------------------------- multilabel
def _ranked(scores: torch.Tensor):
    """For scores ``(..., N)``: the ascending sort order and, at each sorted position, how many scores
    are below its value and how many are at or below it (the bounds of its group of ties).

    Linear in N after the sort (running max/min over the starts/ends of tie groups).
    """
    ordered, order = torch.sort(scores, dim=-1)
    n = ordered.shape[-1]
    idx = torch.arange(n, device=scores.device).expand(ordered.shape)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[..., 1:] = ordered[..., 1:] != ordered[..., :-1]  # a tie group starts here
    below = torch.where(new, idx, 0).cummax(-1).values
    last = torch.ones_like(new)
    last[..., :-1] = new[..., 1:]  # a tie group ends here
    upto = torch.where(last, idx + 1, n).flip(-1).cummin(-1).values.flip(-1)
    return order, below, upto


def _check_binary_columns(Y: torch.Tensor, labels: Sequence[str] | None, what: str) -> None:
    pos = Y.sum(0)
    bad = torch.nonzero((pos == 0) | (pos == Y.shape[0])).flatten().tolist()
    if bad:
        k = bad[0]
        name = labels[k] if labels is not None else k
        raise UserError(
            f"{what} is undefined for label {name!r}: {int(pos[k])} positive and "
            f"{Y.shape[0] - int(pos[k])} negative examples in this split"
        )


def _per_label(Y, scores, fn):
    """Apply ``fn(Yt (K, N), s (C', K, N)) -> (C', K)`` over chunks of probes; return ``(C, K)``."""
    lead = scores.shape[:-2]
    s = scores.reshape(-1, *scores.shape[-2:]).transpose(-1, -2)
    Yt = Y.transpose(0, 1).to(torch.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, s.shape[1] * s.shape[2]))
    out = torch.cat([fn(Yt, s[i : i + step].contiguous()) for i in range(0, s.shape[0], step)])
    return out.reshape(*lead, Y.shape[1])


def _auc(Yt, s):
    order, below, upto = _ranked(s)
    y_sorted = Yt.expand(s.shape).gather(-1, order)
    ranks = (below + upto + 1).to(torch.float64) / 2  # average 1-based ranks of tied scores
    pos = Yt.sum(-1)
    neg = Yt.shape[-1] - pos
    return ((ranks * y_sorted).sum(-1) - pos * (pos + 1) / 2) / (pos * neg)


def _ap(Yt, s):
    order, below, _ = _ranked(s)
    n = s.shape[-1]
    y_sorted = Yt.expand(s.shape).gather(-1, order)
    cum = F.pad(y_sorted.cumsum(-1), (1, 0))  # cum[..., j] = positives among the j lowest scores
    pos = Yt.sum(-1, keepdim=True)
    tp_at_or_above = pos - cum.gather(-1, below)
    precision = tp_at_or_above / (n - below).to(torch.float64)
    return (precision * y_sorted).sum(-1) / pos.squeeze(-1)


def roc_auc_per_label(Y, scores, labels=None) -> torch.Tensor:
    """ROC-AUC of each label: Y ``(N, K)`` 0/1, scores ``(..., N, K)`` -> ``(..., K)`` float64."""
    Y = _as_tensor(Y, device=scores.device)
    _check_binary_columns(Y, labels, "ROC-AUC")
    return _per_label(Y, scores, _auc)


def average_precision_per_label(Y, scores, labels=None) -> torch.Tensor:
    """Average precision (sklearn's step-wise definition) of each label: ``(..., N, K) -> (..., K)``."""
    Y = _as_tensor(Y, device=scores.device)
    _check_binary_columns(Y, labels, "average precision")
    return _per_label(Y, scores, _ap)


def roc_auc_macro(Y, scores, labels=None) -> np.ndarray:
    """Macro ROC-AUC: Y ``(N, K)`` 0/1, scores ``(..., N, K)`` -> ``(...)``."""
    return _out(roc_auc_per_label(Y, scores, labels).mean(-1))


def average_precision_macro(Y, scores, labels=None) -> np.ndarray:
    """Macro average precision: Y ``(N, K)`` 0/1, scores ``(..., N, K)`` -> ``(...)``."""
    return _out(average_precision_per_label(Y, scores, labels).mean(-1))


# ---------------------------------------------------------------- regression
def r2_per_output(Y, pred) -> torch.Tensor:
    """Coefficient of determination per output: Y ``(N, O)``, pred ``(..., N, O)`` -> ``(..., O)``.

    As sklearn's ``r2_score``: a constant target gives 1 for a perfect
    prediction and 0 otherwise.
    """
    Y = _as_tensor(Y, device=pred.device).to(torch.float64)
    pred = pred.to(torch.float64)
    ss_res = (Y - pred).square().sum(-2)
    ss_tot = (Y - Y.mean(0)).square().sum(0).expand(ss_res.shape)
    r2 = 1 - ss_res / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    return torch.where(ss_tot > 0, r2, (ss_res == 0).to(r2.dtype))


# ---------------------------------------------------------------- key
@functools.lru_cache(maxsize=8)
def _key_score_table(labels: tuple) -> np.ndarray:
    import mir_eval

    return np.array([[mir_eval.key.weighted_score(r, e) for e in labels] for r in labels], dtype=np.float64)


def key_score_table(labels: Sequence[str]) -> np.ndarray:
    """``T[r, e]`` = MIREX weighted score of estimating key ``labels[e]`` for reference ``labels[r]``."""
    return _key_score_table(tuple(labels))


def weighted_key_score(ref, est, labels: Sequence[str]) -> np.ndarray:
    """Mean MIREX weighted score: ref ``(S,)`` and est ``(..., S)`` class ids -> ``(...)``."""
    table = torch.as_tensor(key_score_table(labels), device=est.device)
    ref = _as_tensor(ref, device=est.device).long()
    return _out(table[ref.expand(est.shape), est.long()].mean(-1))


def song_index(uids: Sequence[str], y) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group clip uids ``<song>-<clip>`` into songs.

    Returns ``(songs, clip_song, song_y)``: the sorted song uids, the song index
    of each clip ``(N,)``, and each song's label ``(S,)``. Every clip of a song
    must have the song's label.
    """
    y = np.asarray(y)
    songs = sorted({_song_of(uid) for uid in uids})
    where = {s: i for i, s in enumerate(songs)}
    clip_song = np.array([where[_song_of(uid)] for uid in uids], dtype=np.int64)
    song_y = np.full(len(songs), -1, dtype=np.int64)
    for uid, s, label in zip(uids, clip_song, y):
        if song_y[s] not in (-1, label):
            raise UserError(f"clip {uid!r}: label {label} differs from other clips of song {songs[s]!r}")
        song_y[s] = label
    return songs, clip_song, song_y


def _song_of(uid: str) -> str:
    if "-" not in uid:
        raise UserError(f"clip uid {uid!r} is not of the form <song>-<clip>")
    return uid.rsplit("-", 1)[0]


def key_ensembles(logits: torch.Tensor, clip_song, n_songs: int) -> dict[str, torch.Tensor]:
    """Song-level predictions of the four ensembles: logits ``(..., N, 24)`` -> ``{name: (..., S)}``.

    ``vote``: most frequent clip argmax (ties to the smallest class); ``max``:
    argmax of the per-class max logit; ``gmean``: argmax of the mean logit
    (the geometric mean of the softmax); ``mean``: argmax of the mean softmax.
    """
    idx = _as_tensor(clip_song, device=logits.device).long()
    shape = logits.shape[:-2] + (n_songs, logits.shape[-1])
    expand = idx.view(*([1] * (logits.dim() - 2)), -1, 1).expand(logits.shape)

    def song_sum(values):
        return torch.zeros(shape, dtype=values.dtype, device=values.device).scatter_add_(-2, expand, values)

    votes = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.int64)
    song_max = torch.full(shape, -torch.inf, dtype=logits.dtype, device=logits.device)
    song_max = song_max.scatter_reduce(-2, expand, logits, reduce="amax")
    return {
        "vote": song_sum(votes).argmax(-1),
        "max": song_max.argmax(-1),
        "gmean": song_sum(logits.double()).argmax(-1),
        "mean": song_sum(torch.softmax(logits, -1).double()).argmax(-1),
    }


def _key_metrics(logits, y, uids, labels, choose_on) -> dict:
    _, clip_song, song_y = song_index(uids, y.cpu().numpy())
    y = y.to(logits.device).long()
    song_y = torch.as_tensor(song_y, device=logits.device)
    clip_pred = torch.softmax(logits, -1).argmax(-1)
    out = {
        "clip_accuracy": _out((clip_pred == y).double().mean(-1)),
        "clip_score": weighted_key_score(y, clip_pred, labels),
    }
    for name, pred in key_ensembles(logits, clip_song, len(song_y)).items():
        out[f"ensemble_{name}_accuracy"] = _out((pred == song_y).double().mean(-1))
        out[f"ensemble_{name}_score"] = weighted_key_score(song_y, pred, labels)
    chooser = out if choose_on is None else choose_on
    valid_scores = np.stack(
        [np.asarray(chooser[f"ensemble_{n}_score"], np.float64).reshape(-1) for n in ENSEMBLES], -1
    )
    if valid_scores.shape[0] != logits.shape[0]:
        raise ValueError(
            f"choose_on holds {valid_scores.shape[0]} probes' metrics, the logits {logits.shape[0]}"
        )
    best = valid_scores.argmax(-1)  # first maximum: ties keep the order vote, max, gmean, mean
    for m in ("accuracy", "score"):
        table = np.stack([out[f"ensemble_{n}_{m}"] for n in ENSEMBLES], -1)
        out[m] = table[np.arange(len(best)), best]
    return out


# ---------------------------------------------------------------- per task
def compute_metrics(
    spec,
    logits,
    targets,
    uids: Sequence[str] | None = None,
    choose_on: dict | None = None,
    names: Sequence[str] | None = None,
) -> dict:
    """All metrics of ``spec``'s task (a :class:`jukemir.datasets.DatasetSpec`).

    Args:
        logits: ``(N, K)`` for one probe, or ``(..., N, K)`` for several.
        targets: as produced by :func:`jukemir.probe.train.encode_targets`.
        uids: clip uids of the ``N`` examples (needed by the key task).
        choose_on: key task only: the validation metrics from which the song
            ensemble is chosen; ``None`` when ``logits`` are of the validation
            split itself.
        names: compute only these metrics (plus what they need), e.g. the
            early-stopping metric; ``None`` for all.

    Returns ``{name: value}`` including ``loss`` and ``primary``: floats for
    ``(N, K)`` logits, float64 arrays of the leading shape otherwise.
    """
    logits = _as_tensor(logits)
    single = logits.dim() == 2
    logits3 = logits.reshape(-1, *logits.shape[-2:])
    targets = _as_tensor(targets, device=logits.device)
    want = None if names is None else {spec.primary if n == "primary" else n for n in names}

    def wanted(name):
        return want is None or name in want

    out = {}
    if wanted("loss"):
        out["loss"] = _out(task_loss(spec.task, logits3, targets))
    if spec.key_clips:
        if uids is None:
            raise UserError(f"dataset {spec.name!r}: the key metrics need the clip uids")
        out.update(_key_metrics(logits3, targets, uids, spec.labels, choose_on))
    elif spec.task == "multiclass":
        out["accuracy"] = accuracy(targets, logits3)
    elif spec.task == "multilabel":
        probs = torch.sigmoid(logits3)
        if wanted("auc_roc"):
            out["auc_roc"] = roc_auc_macro(targets, probs, spec.labels)
        if wanted("ap"):
            out["ap"] = average_precision_macro(targets, probs, spec.labels)
    elif spec.task == "regression":
        per = r2_per_output(targets, logits3)
        out["r2"] = _out(per.mean(-1))
        for i, name in enumerate(spec.output_names or []):
            out[f"{name}_r2"] = _out(per[..., i])
    missing = sorted(want - set(out)) if want is not None else []
    if missing:
        raise UserError(
            f"dataset {spec.name!r} ({spec.task}) has no metric {missing[0]!r}; it has {sorted(out)}"
        )
    out["primary"] = out[spec.primary]
    lead = logits.shape[:-2]
    return {k: float(v[0]) if single else np.asarray(v).reshape(lead) for k, v in out.items()}
