"""Probe stage: config uid, grids, model, metrics, data loading, training, save/load, evaluation, CLI."""

from __future__ import annotations

import json
import random

import mir_eval
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, r2_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from jukemir.cache import Layout
from jukemir.cli import main
from jukemir.datasets import KEYS, MTT_TOP50, get_dataset
from jukemir.io import save_npy, write_json
from jukemir.probe import metrics as M
from jukemir.probe.config import ProbeConfig, load_config
from jukemir.probe.data import load_probe_data
from jukemir.probe.evaluate import evaluate, find_runs, results_table, select_best
from jukemir.probe.grid import DEMO_GRID, grid_cfgs, named_grid_cfgs, paper_grid_cfgs, write_grid_configs
from jukemir.probe.model import SimpleMLP, initial_state
from jukemir.probe.run import load_probe
from jukemir.probe.scaler import Scaler
from jukemir.probe.serial import train_probe
from jukemir.probe.stack import train_probes
from jukemir.probe.train import train_grid


# ---------------------------------------------------------------- helpers
def write_dataset(name, rep, items):
    """items: uid -> (split, y, feature vector); writes meta.json and the .npy files into the cache."""
    write_json(
        Layout().processed(name) / "meta.json", {u: {"split": s, "y": y} for u, (s, y, _) in items.items()}
    )
    folder = Layout().representations(name, rep)
    for uid, (_, _, x) in items.items():
        save_npy(folder / f"{uid}.npy", np.asarray(x, dtype=np.float32))
    return folder


def original_test_dataset():
    """The original's unit-test data: 1000 one-hot items of 4 classes, split 8/1/1 by index."""
    random.seed(0)
    np.random.seed(0)
    ratio = ["train"] * 8 + ["valid", "test"]
    items = {}
    for i in range(1000):
        y = np.random.randint(0, 4)
        x = np.zeros(4, dtype=np.float32)
        x[y] = 1
        items[str(i)] = (ratio[i % 10], str(y), x)
    write_dataset("test", "test", items)


def blobs_dataset(name="gtzan_ff", rep="blobs", n=(240, 80, 80), dim=16, noise=1.6, seed=0):
    """Gaussian class clusters (offset from 0) of a 10-class dataset."""
    rng = np.random.default_rng(seed)
    spec = get_dataset(name)
    centers = rng.normal(size=(spec.num_outputs, dim)) * 1.5
    items = {}
    for split, count in zip(("train", "valid", "test"), n):
        for i in range(count):
            k = int(rng.integers(spec.num_outputs))
            x = centers[k] + noise * rng.normal(size=dim) + 3.0
            items[f"{split}{i:04d}"] = (split, spec.labels[k], x)
    write_dataset(name, rep, items)


# ---------------------------------------------------------------- config and grid
def test_config_uid_defaults_and_errors(tmp_path):
    cfg = ProbeConfig(dataset="debug", representation="debug")
    assert cfg.uid() == "931d09133314c180443615815249a7415da09c86"
    assert list(cfg)[:3] == ["dataset", "representation", "data_standardization"] and len(cfg) == 15
    assert (
        cfg["learning_rate"] == 1e-3
        and cfg["l2_weight_decay"] is None
        and cfg["early_stopping_boredom"] == 256
    )
    assert json.loads(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="Required field"):
        ProbeConfig()
    with pytest.raises(ValueError, match="Unknown field"):
        ProbeConfig(dataset="debug", representation="debug", foo="bar")
    with pytest.raises(ValueError, match="All values must be JSON-serializable"):
        ProbeConfig(dataset="debug", representation="debug", batch_size=object())
    with pytest.raises(ValueError, match="'dropout_p' must be a number in"):
        ProbeConfig(dataset="debug", representation="debug", dropout_p=1.0)
    with pytest.raises(ValueError, match="'hidden_layer_sizes'"):
        ProbeConfig(dataset="debug", representation="debug", hidden_layer_sizes=[0])
    bad = tmp_path / "bad.json"
    bad.write_text('{"dataset": "x"}')
    with pytest.raises(ValueError, match=f"{bad}: Required field representation missing"):
        load_config(bad)


def test_grids(isolated_cache):
    assert grid_cfgs("d", "r", {}) == []
    one = grid_cfgs("d", "r", {"batch_size": [10]})
    assert len(one) == 1 and one[0]["batch_size"] == 10
    four = grid_cfgs("d", "r", {"batch_size": [10, 20], "learning_rate": [1, 2]})
    assert len(four) == 4 and (four[-1]["batch_size"], four[-1]["learning_rate"]) == (20, 2)
    assert (four[1]["batch_size"], four[1]["learning_rate"]) == (10, 2)  # last field varies fastest
    paper = paper_grid_cfgs("gtzan_ff", "jukebox")
    assert len(paper) == 216 and len({c.uid() for c in paper}) == 216
    assert all(c["early_stopping_boredom"] == 256 and c["dropout_input"] and c["seed"] == 0 for c in paper)
    demo = named_grid_cfgs("synthetic", "chroma", "demo")
    assert len(demo) == 12 and set(DEMO_GRID) <= set(ProbeConfig(dataset="a", representation="b"))
    paths = write_grid_configs(demo)
    assert paths[0] == isolated_cache / "probes" / "synthetic" / "chroma" / f"{demo[0].uid()}.json"
    assert load_config(paths[3]) == demo[3]


# ---------------------------------------------------------------- model
def test_simple_mlp_parameters_and_dropout_input():
    mlp = SimpleMLP(100, [50], 10)
    assert sum(p.numel() for p in mlp.parameters()) == 100 * 50 + 50 + 50 * 10 + 10
    assert list(dict(mlp.named_parameters())) == [
        "hidden_0.weight",
        "hidden_0.bias",
        "output.weight",
        "output.bias",
    ]
    x = torch.randn(8, 100)
    linear = SimpleMLP(100, [], 3, dropout_input=False, dropout_p=0.5).train()
    assert torch.equal(linear(x), linear.eval()(x))  # no dropout anywhere
    dropped = SimpleMLP(100, [], 3, dropout_input=True, dropout_p=0.5).train()
    assert not torch.equal(dropped(x), dropped.eval()(x))  # the original's behaviour: input dropout on
    torch.manual_seed(3)
    expected = SimpleMLP(100, [50], 10).state_dict()
    state = initial_state(100, [50], 10, seed=3)
    assert all(torch.equal(expected[k], state[k]) for k in expected)


# ---------------------------------------------------------------- metrics
def test_multilabel_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    Y = (rng.random((120, 6)) < 0.3).astype(np.uint8)
    scores = rng.random((3, 120, 6)).astype(np.float32)
    scores[:, :60, 1] = np.round(scores[:, :60, 1], 1)  # many tied scores
    scores[:, :, 2] = 0.5  # all tied
    auc = M.roc_auc_macro(Y, torch.tensor(scores))
    ap = M.average_precision_macro(Y, torch.tensor(scores))
    for c in range(3):
        assert auc[c] == pytest.approx(roc_auc_score(Y, scores[c], average="macro"), abs=1e-12)
        assert ap[c] == pytest.approx(average_precision_score(Y, scores[c], average="macro"), abs=1e-12)
    Y[:, 4] = 0
    with pytest.raises(ValueError, match="undefined for label 'e'"):
        M.roc_auc_macro(Y, torch.tensor(scores), labels=list("abcdef"))


def test_regression_and_accuracy_match_sklearn_and_hand():
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(40, 2)).astype(np.float32)
    pred = rng.normal(size=(2, 40, 2)).astype(np.float32)
    spec = get_dataset("emomusic")
    m = M.compute_metrics(spec, torch.tensor(pred), Y)
    for c in range(2):
        assert m["r2"][c] == pytest.approx(
            r2_score(Y, pred[c]), rel=1e-6
        )  # sklearn sums float32 inputs in float32
        assert m["arousal_r2"][c] == pytest.approx(r2_score(Y[:, 0], pred[c][:, 0]), rel=1e-6)
        assert m["valence_r2"][c] == pytest.approx(r2_score(Y[:, 1], pred[c][:, 1]), rel=1e-6)
        assert m["loss"][c] == pytest.approx(
            F.mse_loss(torch.tensor(pred[c]), torch.tensor(Y)).item(), rel=1e-5
        )
    const = np.ones((5, 1))
    assert M.r2_per_output(const, torch.ones(5, 1, dtype=torch.float64)).item() == 1.0  # sklearn's convention
    assert M.r2_per_output(const, torch.zeros(5, 1, dtype=torch.float64)).item() == 0.0
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 1, 2])
    spec = get_dataset("test")
    one = M.compute_metrics(spec, torch.cat([logits, torch.zeros(4, 1)], 1), y)
    assert one["accuracy"] == 0.5 and one["primary"] == 0.5
    assert one["loss"] == pytest.approx(
        F.cross_entropy(torch.cat([logits, torch.zeros(4, 1)], 1), y).item(), rel=1e-6
    )


def test_multilabel_task_metrics_and_loss():
    rng = np.random.default_rng(2)
    Y = (rng.random((60, 50)) < 0.2).astype(np.uint8)
    Y[0] = 1
    Y[1] = 0
    logits = torch.tensor(rng.normal(size=(60, 50)).astype(np.float32) * 3)
    m = M.compute_metrics(get_dataset("magnatagatune"), logits, Y)
    probs = torch.sigmoid(logits).numpy()
    assert m["auc_roc"] == pytest.approx(roc_auc_score(Y, probs, average="macro"), abs=1e-12)
    assert m["ap"] == pytest.approx(average_precision_score(Y, probs, average="macro"), abs=1e-12)
    assert m["primary"] == m["auc_roc"]
    assert m["loss"] == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, torch.tensor(Y).float()).item(), rel=1e-5
    )
    assert len(MTT_TOP50) == 50


def test_loss_gradient_matches_autograd():
    torch.manual_seed(0)
    cases = [
        ("multiclass", torch.randint(0, 5, (7,))),
        ("multilabel", (torch.rand(7, 5) < 0.4).to(torch.uint8)),
        ("regression", torch.randn(7, 5)),
    ]
    for task, y in cases:
        logits = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
        M.task_loss(task, logits, y).sum().backward()
        assert torch.allclose(M.loss_gradient(task, logits.detach(), y), logits.grad), task


def test_key_score_table_matches_mir_eval():
    table = M.key_score_table(KEYS)
    for r in range(24):
        for e in range(24):
            assert table[r, e] == mir_eval.key.weighted_score(KEYS[r], KEYS[e])
    assert table[KEYS.index("C major"), KEYS.index("G major")] == 0.5
    assert table[KEYS.index("A minor"), KEYS.index("C major")] == 0.3
    assert table[KEYS.index("C major"), KEYS.index("C minor")] == 0.2


def _key_logits(rows):
    """rows of (class, value) -> one-hot-ish logits (N, 24)."""
    out = torch.zeros(len(rows), 24)
    for i, entries in enumerate(rows):
        for k, v in entries:
            out[i, k] = v
    return out


def test_key_ensembles_by_hand_and_vote_ties():
    C, G, Am = KEYS.index("C major"), KEYS.index("G major"), KEYS.index("A minor")
    # song a: clips vote G, C (a tie: smallest class C wins the vote); max picks G (logit 9);
    # gmean/mean see the larger total mass on C.
    logits = _key_logits([[(G, 9.0)], [(C, 8.0), (G, 1.0)]])
    uids = ["a-0", "a-1"]
    songs, clip_song, song_y = M.song_index(uids, [C, C])
    assert songs == ["a"] and list(clip_song) == [0, 0] and list(song_y) == [C]
    preds = M.key_ensembles(logits, clip_song, 1)
    assert preds["vote"].tolist() == [C]  # tie between C and G -> C (index 0 < 7)
    assert preds["max"].tolist() == [G]
    assert preds["gmean"].tolist() == [G]  # mean logits: G (9+1)/2 = 5 > C 4
    probs = torch.softmax(logits, -1).mean(0)
    assert preds["mean"].tolist() == [int(probs.argmax())]
    # a song whose clips disagree on the label is an error
    with pytest.raises(ValueError, match="differs from other clips of song 'a'"):
        M.song_index(["a-0", "a-1"], [C, Am])


def test_key_metrics_choose_the_ensemble_on_validation():
    spec = get_dataset("synthetic")
    C, G, E = KEYS.index("C major"), KEYS.index("G major"), KEYS.index("E major")
    # two songs; song x (label C): votes C, G, G -> vote G (fifth above: 0.5); max/gmean/mean C
    logits = _key_logits([[(C, 9.0)], [(G, 2.0)], [(G, 2.0)], [(E, 3.0)]])
    uids = ["x-0", "x-1", "x-2", "y-0"]
    y = torch.tensor([C, C, C, E])
    m = M.compute_metrics(spec, logits, y, uids)
    assert m["ensemble_vote_score"] == pytest.approx((0.5 + 1) / 2)
    assert m["ensemble_max_score"] == m["ensemble_gmean_score"] == 1.0
    assert m["clip_accuracy"] == 0.5 and m["clip_score"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert m["score"] == 1.0 and m["accuracy"] == 1.0 and m["primary"] == 1.0  # max wins (first of the ties)
    # on another split the strategy chosen on validation applies, even if it is worse there
    chosen_vote = {f"ensemble_{n}_score": (1.0 if n == "vote" else 0.0) for n in M.ENSEMBLES}
    t = M.compute_metrics(spec, logits, y, uids, choose_on=chosen_vote)
    assert t["score"] == t["ensemble_vote_score"] and t["accuracy"] == 0.5
    # batched: one probe per row, each with its own choice
    per_probe = {
        "ensemble_vote_score": [1.0, 0.0],
        "ensemble_max_score": [0.0, 1.0],
        "ensemble_gmean_score": [0.0, 0.0],
        "ensemble_mean_score": [0.0, 0.0],
    }
    both = M.compute_metrics(spec, torch.stack([logits, logits]), y, uids, choose_on=per_probe)
    assert both["score"].tolist() == [t["score"], 1.0]


# ---------------------------------------------------------------- data
def test_scaler_matches_sklearn(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(50, 6)) * [1, 10, 1e3, 1e-3, 0, 1] + [0, 5, -3, 1, 7, 1e4]).astype(np.float32)
    ours = Scaler.fit(X, True)
    ref = StandardScaler().fit(X)
    assert np.allclose(ours.mean, ref.mean_, rtol=1e-12) and np.allclose(ours.scale, ref.scale_, rtol=1e-12)
    assert ours.scale[4] == 1.0  # constant feature
    exact = (X.astype(np.float64) - ours.mean) / ours.scale
    assert np.allclose(ours.transform(X), exact, rtol=1e-6, atol=1e-6)
    # recent sklearn rounds mean and scale to float32 first, which costs it up to ~1e-3 on column 5
    assert np.allclose(ours.transform(X), ref.transform(X), atol=1e-3)
    assert np.array_equal(Scaler.fit(X, False).transform(X), X)
    path = tmp_path / "s.npz"
    path.write_bytes(ours.to_bytes())
    again = Scaler.from_file(path)
    assert np.array_equal(again.mean, ours.mean) and np.array_equal(again.scale, ours.scale)


def test_load_probe_data_order_and_errors(isolated_cache):
    original_test_dataset()
    data = load_probe_data("test", "test", seed=0)
    expected = sorted(str(i) for i in range(1000) if i % 10 < 8)
    random.seed(0)
    random.shuffle(expected)
    assert data.uids["train"] == expected
    assert data.X["train"].shape == (800, 4) and data.targets["train"].dtype == np.int64
    other = data.reordered(1)
    assert sorted(other.uids["train"]) == sorted(expected) and other.uids["train"] != expected
    i = other.uids["train"].index(expected[0])
    assert np.array_equal(other.X["train"][i], data.X["train"][0])

    folder = Layout().representations("test", "test")
    (folder / "5.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"5\.npy: missing feature of train item '5'"):
        load_probe_data("test", "test")
    save_npy(folder / "5.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"5\.npy: feature has shape \(2, 2\)"):
        load_probe_data("test", "test")
    save_npy(folder / "5.npy", np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"5\.npy: feature has 5 dims, .*has 4"):
        load_probe_data("test", "test")
    save_npy(folder / "5.npy", np.zeros(4, np.float32))
    meta = json.loads((Layout().processed("test") / "meta.json").read_text())
    meta["7"]["y"] = "9"
    write_json(Layout().processed("test") / "meta.json", meta)
    with pytest.raises(ValueError, match="meta.json: item '7' has label '9'"):
        load_probe_data("test", "test")
    with pytest.raises(FileNotFoundError, match="no features of test/other"):
        load_probe_data("test", "other")


def test_nonfinite_features_are_reported_and_replaced(isolated_cache, capsys):
    rng = np.random.default_rng(0)
    items = {}
    for i in range(30):
        split = ("train", "valid", "test")[i % 3]
        items[f"u{i:02d}"] = (split, "0" if i % 2 else "1", rng.normal(size=3))
    items["u00"][2][0] = np.inf
    items["u03"][2][1] = -np.inf
    items["u01"][2][2] = np.nan  # a valid item
    write_dataset("test", "nf", items)
    data = load_probe_data("test", "nf")
    err = capsys.readouterr().err
    assert (
        "test/nf: 3 of 30 feature files have non-finite values (1 NaN, 1 +inf, 1 -inf in 3 of 3 dims)" in err
    )
    assert all(np.isfinite(x).all() for x in data.X.values())
    train = np.array([items[u][2] for u in data.uids["train"]])
    finite = np.isfinite(train)
    row = data.uids["train"].index("u00")
    assert data.X["train"][row, 0] == np.float32(train[finite[:, 0], 0].max())
    row = data.uids["train"].index("u03")
    assert data.X["train"][row, 1] == np.float32(train[finite[:, 1], 1].min())
    row = data.uids["valid"].index("u01")
    assert data.X["valid"][row, 2] == pytest.approx(train[finite[:, 2], 2].mean(), abs=1e-6)
    assert data.nonfinite.files == 3
    cfg = ProbeConfig(dataset="test", representation="nf", max_num_epochs=2)
    assert np.isfinite(train_probe(cfg, data, device="cpu").evaluate(data, "test")["loss"])
    with pytest.raises(ValueError, match=r"u00\.npy: 1 non-finite feature values"):
        load_probe_data("test", "nf", nonfinite="error")


# ---------------------------------------------------------------- training
def test_original_end_to_end_and_save_load(isolated_cache):
    original_test_dataset()
    cfg = ProbeConfig(dataset="test", representation="test", max_num_epochs=100, dropout_p=0)
    data = load_probe_data("test", "test")
    probe = train_probe(cfg, data, device="cpu")
    results = probe.evaluate(data, "test")
    assert results["accuracy"] == 1
    assert abs(results["loss"] - 0.09166) < 0.01
    assert (
        probe.info["stopped_by"] == "max_num_epochs" and probe.info["steps"] == 1251
    )  # 1251 * 64 / 800 > 100
    folder = probe.save(data)
    assert folder == isolated_cache / "probes" / "test" / "test" / cfg.uid()
    assert sorted(p.name for p in folder.iterdir()) == [
        "cfg.json",
        "metrics.json",
        "probe.pt",
        "scaler.npz",
        "train.json",
    ]
    assert json.loads((folder / "metrics.json").read_text()) == probe.evaluate(data, "valid")
    loaded = load_probe("test", "test", cfg.uid(), device="cpu")
    assert loaded.evaluate(data, "test") == results
    # the vectorised trainer takes the same minibatches and initial weights; without dropout it matches
    [vec] = train_probes([cfg], data, device="cpu", progress=False)
    assert vec.info["steps"] == 1251
    assert vec.evaluate(data, "test")["loss"] == pytest.approx(results["loss"], abs=1e-5)


@pytest.mark.parametrize("vectorised", [False, True])
def test_early_stopping_restores_the_best_state(isolated_cache, vectorised):
    blobs_dataset(n=(200, 60, 60))
    data = load_probe_data("gtzan_ff", "blobs")
    cfg = ProbeConfig(
        dataset="gtzan_ff",
        representation="blobs",
        learning_rate=1e-2,
        dropout_p=0.25,
        early_stopping_eval_frequency=4,
        early_stopping_boredom=5,
    )

    def train(c):
        return (
            train_probes([c], data, device="cpu", progress=False)[0]
            if vectorised
            else train_probe(c, data, "cpu")
        )

    probe = train(cfg)
    info = probe.info
    assert info["stopped_by"] == "early_stopping" and info["best_step"] > 0
    assert (
        info["steps"] == info["best_step"] + (5 + 1) * 4
    )  # 5 non-improving evaluations, then the stop check
    assert probe.evaluate(data, "valid")["accuracy"] == pytest.approx(info["best_score"])

    def weights_after(steps):  # the same run without early stopping, cut after `steps` updates
        epochs = (steps - 0.5) * cfg["batch_size"] / len(data.uids["train"])
        twin = train(ProbeConfig({**cfg, "early_stopping": False, "max_num_epochs": epochs}))
        assert twin.info["steps"] == steps
        return twin.model.state_dict()

    got = probe.model.state_dict()
    best, last = weights_after(info["best_step"]), weights_after(info["steps"])
    assert all(torch.equal(got[k], best[k]) for k in got)
    assert not all(torch.equal(got[k], last[k]) for k in got)


def test_vectorised_grid_agrees_with_serial(isolated_cache):
    """Both trainers on one small grid of a synthetic 10-class task.

    Tolerance: without dropout, every config's validation and test accuracy
    agree within 0.02 (the two differ only in float rounding of the batched
    products and the fused Adam kernel); with dropout (different noise
    streams), the configs picked on validation agree within 0.05 on test.
    """
    data, cfgs = _blobs_grid()
    vec = train_probes(cfgs, data, device="cpu", progress=False)
    ser = [train_probe(c, data, device="cpu") for c in cfgs]
    results = {}
    for name, probes in (("vec", vec), ("ser", ser)):
        results[name] = [
            (p.evaluate(data, "valid")["accuracy"], p.evaluate(data, "test")["accuracy"]) for p in probes
        ]
    for cfg, v, s in zip(cfgs, results["vec"], results["ser"]):
        if cfg["dropout_p"] == 0:
            assert abs(v[0] - s[0]) <= 0.02 and abs(v[1] - s[1]) <= 0.02, (cfg, v, s)
    best_vec = max(range(len(cfgs)), key=lambda i: (results["vec"][i][0], -i))
    best_ser = max(range(len(cfgs)), key=lambda i: (results["ser"][i][0], -i))
    assert abs(results["vec"][best_vec][1] - results["ser"][best_ser][1]) <= 0.05
    assert results["vec"][best_vec][1] > 0.5  # well above chance (0.1)


ADAM_CFGS = [{"learning_rate": lr, "l2_weight_decay": wd} for lr in (1e-3, 1e-2) for wd in (None, 1e-3)]


def _adam_params() -> list[list[torch.Tensor]]:
    """One (weight, bias) pair per config of ``ADAM_CFGS``, the same values on every call, zero gradients."""
    torch.manual_seed(1)
    views = [[torch.randn(5, 3), torch.randn(3)] for _ in ADAM_CFGS]
    for view in views:
        for t in view:
            t.grad = torch.zeros_like(t)
    return views


def _same_random_grads(ours, ref, gen: torch.Generator) -> None:
    """Give each parameter of ``ours`` and its twin in ``ref`` the same new random gradient."""
    for a, b in zip(sum(ours, []), sum(ref, [])):
        g = torch.randn(a.shape, generator=gen)
        a.grad.copy_(g)
        b.grad.copy_(g)


def test_stack_adam_is_torch_fused_adam():
    """The vectorised trainer's Adam: torch's fused Adam arithmetic, bit for bit, also after a compaction."""
    from jukemir.probe.adam import StackAdam, make_adam

    gen = torch.Generator().manual_seed(0)
    cfgs = ADAM_CFGS
    ours, ref = _adam_params(), _adam_params()
    opt = make_adam(ours, cfgs)
    assert isinstance(opt, StackAdam)
    groups = {}
    for view, cfg in zip(ref, cfgs):
        groups.setdefault((cfg["learning_rate"], cfg["l2_weight_decay"] or 0), []).extend(view)
    ref_opt = torch.optim.Adam(
        [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()], fused=True
    )
    for step in range(6):
        _same_random_grads(ours, ref, gen)
        opt.step()
        ref_opt.step()
        if step == 2:  # drop configs 0 and 2 and carry the others' state, as _Stack._compact does
            keep = [1, 3]
            opt = make_adam(
                [ours[i] for i in keep],
                [cfgs[i] for i in keep],
                old=[(p, opt.state[p]) for i in keep for p in ours[i]],
            )
            ours = [ours[i] for i in keep]
            ref = [ref[i] for i in keep]
        assert all(torch.equal(a, b) for a, b in zip(sum(ours, []), sum(ref, []))), step
    assert float(opt.step_count) == 6


def _failing_kernel(monkeypatch, works_for: int):
    """Make torch's private fused Adam kernel raise TypeError after ``works_for`` calls.

    It raises as a changed signature would, with the adam module's once-per-process
    state reset; returns the call counter.
    """
    from jukemir.probe import adam

    real, calls = torch._fused_adam_, [0]

    def kernel(*args, **kwargs):
        calls[0] += 1
        if calls[0] > works_for:
            raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", kernel)
    monkeypatch.setattr(adam, "_fused_ok", {})
    monkeypatch.setattr(adam, "_warned", False)
    return calls


def test_stack_adam_fails_over_mid_update_to_torch_adam(monkeypatch):
    """The kernel fails on the 2nd of 4 parameter groups of the 3rd update: the update is finished by
    torch.optim.Adam, no parameter group is updated twice or skipped, moments and step counts carry over,
    and six updates end within float32 rounding (rtol 1e-5) of torch.optim.Adam's own six."""
    from jukemir.probe.adam import PublicAdam, StackAdam, make_adam

    calls = _failing_kernel(monkeypatch, works_for=2 + 2 * 4 + 1)  # the device check, two updates, one group
    gen = torch.Generator().manual_seed(0)
    cfgs = ADAM_CFGS
    ours, ref = _adam_params(), _adam_params()
    opt = make_adam(ours, cfgs)
    assert isinstance(opt, StackAdam)
    ref_opt = PublicAdam({(c["learning_rate"], c["l2_weight_decay"] or 0): v for c, v in zip(cfgs, ref)})

    def six_updates():
        for _ in range(6):
            _same_random_grads(ours, ref, gen)
            opt.step()
            ref_opt.step()

    with pytest.warns(RuntimeWarning, match="fused Adam kernel failed on cpu .*TypeError.*torch.optim.Adam"):
        six_updates()
    assert calls[0] == 2 + 2 * 4 + 2 and opt.fallback is not None  # the kernel was not called after it failed
    for a, b in zip(sum(ours, []), sum(ref, [])):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-8), (a, b)
        assert float(opt.state[a]["step"]) == float(ref_opt.state[b]["step"]) == 6
        for moment in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(opt.state[a][moment], ref_opt.state[b][moment], rtol=1e-5, atol=1e-12)
    assert isinstance(make_adam(ours, cfgs), PublicAdam)  # later stacks on this device do not try it again


@pytest.mark.parametrize("works_for", [0, 40], ids=["from-the-start", "mid-run"])
def test_grid_trains_on_when_fused_adam_fails(isolated_cache, monkeypatch, works_for):
    """Whatever the private kernel does wrong, the stacked trainer goes on with torch.optim.Adam.

    Here it raises from its first call, or after 40 calls: the device check and
    19 updates of the first stack; the trainer warns once. The results stay
    within the vectorised-vs-serial tolerances
    (test_vectorised_grid_agrees_with_serial) of the fused run: here for every
    config, dropout or not, since both runs draw the same minibatches and
    dropout noise: validation and test accuracy within 0.02, and the configs
    picked on validation within 0.05 on test.
    """
    data, cfgs = _blobs_grid()
    fused = train_probes(cfgs, data, device="cpu", progress=False)
    calls = _failing_kernel(monkeypatch, works_for)
    with pytest.warns(RuntimeWarning) as record:
        public = train_probes(cfgs, data, device="cpu", progress=False)
    assert [str(w.message).count("fused Adam kernel failed") for w in record] == [1]
    assert calls[0] == works_for + 1  # it was tried, and never again after its failure
    acc = {
        name: [(p.evaluate(data, "valid")["accuracy"], p.evaluate(data, "test")["accuracy"]) for p in probes]
        for name, probes in (("fused", fused), ("public", public))
    }
    for cfg, a, b in zip(cfgs, acc["fused"], acc["public"]):
        assert abs(a[0] - b[0]) <= 0.02 and abs(a[1] - b[1]) <= 0.02, (cfg, a, b)
    best = {name: max(range(len(cfgs)), key=lambda i: (acc[name][i][0], -i)) for name in acc}
    assert abs(acc["fused"][best["fused"]][1] - acc["public"][best["public"]][1]) <= 0.05
    # the fallback really took over: torch.optim.Adam's rounding differs from the kernel's somewhere
    assert any(not torch.equal(p.model.output.weight, q.model.output.weight) for p, q in zip(fused, public))


def _blobs_grid():
    blobs_dataset(n=(300, 100, 100), dim=24, noise=2.2)
    data = load_probe_data("gtzan_ff", "blobs")
    grid = {
        "data_standardization": [False, True],
        "hidden_layer_sizes": [[], [32]],
        "learning_rate": [1e-3, 1e-2],
        "dropout_p": [0.0, 0.5],
        "early_stopping_boredom": [12],
    }
    return data, grid_cfgs("gtzan_ff", "blobs", grid)


def test_bf16_grid_agrees_with_fp32(isolated_cache):
    """``precision="bf16"``: bfloat16 first-layer products, float32 accumulation, weights and Adam.

    The two runs share minibatches and dropout noise, so they differ only by
    rounding. Tolerance: every config's validation and test accuracy within
    0.05 of fp32's, and the configs picked on validation within 0.03 on test.
    """
    data, cfgs = _blobs_grid()
    fp32 = train_probes(cfgs, data, device="cpu", progress=False)
    bf16 = train_probes(cfgs, data, device="cpu", progress=False, precision="bf16")
    assert {p.info["precision"] for p in fp32} == {"fp32"} and {p.info["precision"] for p in bf16} == {"bf16"}
    assert all(t.dtype == torch.float32 for p in bf16 for t in p.model.state_dict().values())
    acc = {
        name: [(p.evaluate(data, "valid")["accuracy"], p.evaluate(data, "test")["accuracy"]) for p in probes]
        for name, probes in (("fp32", fp32), ("bf16", bf16))
    }
    for cfg, a, b in zip(cfgs, acc["fp32"], acc["bf16"]):
        assert abs(a[0] - b[0]) <= 0.05 and abs(a[1] - b[1]) <= 0.05, (cfg, a, b)
    # rounding does change the runs (this is not fp32 under another name)
    assert any(not torch.equal(p.model.output.weight, q.model.output.weight) for p, q in zip(fp32, bf16))
    best = {name: max(range(len(cfgs)), key=lambda i: (acc[name][i][0], -i)) for name in acc}
    assert abs(acc["fp32"][best["fp32"]][1] - acc["bf16"][best["bf16"]][1]) <= 0.03
    with pytest.raises(ValueError, match="precision must be one of"):
        train_probes(cfgs[:1], data, device="cpu", progress=False, precision="fp8")


def test_splitting_a_stack_changes_nothing(isolated_cache, monkeypatch):
    """On CPU in bf16 a stack is trained as several smaller stacks.

    Each config's run is the same either way.
    """
    from jukemir.probe import stack as stack_module

    data, cfgs = _blobs_grid()
    cfgs = [c for c in cfgs if c["hidden_layer_sizes"]]
    monkeypatch.setattr(stack_module, "CPU_STACK_PARAMS", 3 * (25 * 32 + 33 * 10))  # three configs per stack
    fp32 = train_probes(cfgs, data, device="cpu", progress=False)
    assert {p.info["stack_size"] for p in fp32} == {len(cfgs)}  # fp32 stacks are never split
    split = train_probes(cfgs, data, device="cpu", progress=False, precision="bf16")
    monkeypatch.setattr(stack_module, "CPU_STACK_PARAMS", 10**12)
    whole = train_probes(cfgs, data, device="cpu", progress=False, precision="bf16")
    assert {p.info["stack_size"] for p in whole} == {len(cfgs)}
    assert sorted(p.info["stack_size"] for p in split) == [2] * 2 + [3] * 6
    for a, b in zip(whole, split):
        assert a.info["steps"] == b.info["steps"] and a.info["best_step"] == b.info["best_step"]
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.allclose(sa[k], sb[k], rtol=0, atol=1e-6) for k in sa), a.cfg


# ---------------------------------------------------------------- grid, evaluate, CLI
class RecordingExecutor:
    name = "recording"

    def __init__(self):
        self.shards = []

    def map(self, fn, items):
        self.shards.extend(items)
        return [fn(item) for item in items]


def test_train_grid_resumes_and_uses_the_executor_hook(isolated_cache):
    original_test_dataset()
    cfgs = grid_cfgs(
        "test", "test", {"hidden_layer_sizes": [[], [8]], "learning_rate": [1e-2], "max_num_epochs": [3]}
    )
    first = train_grid("test", "test", cfgs[:1], progress=False, device="cpu")
    assert [s["status"] for s in first] == ["trained"] and first[0]["metrics"]["accuracy"] == 1.0
    executor = RecordingExecutor()
    again = train_grid("test", "test", cfgs, progress=False, device="cpu", executor=executor)
    assert [s["status"] for s in again] == ["skipped", "trained"]
    assert executor.shards == [[dict(cfgs[1])]]
    assert len(find_runs("test", "test")) == 2
    with pytest.raises(ValueError, match="not test/other"):
        train_grid("test", "other", cfgs, progress=False)


def test_select_best_breaks_ties_by_uid(tmp_path):
    for uid, score in [("c" * 40, 0.5), ("a" * 40, 0.9), ("b" * 40, 0.9)]:
        write_json(tmp_path / uid / "metrics.json", {"primary": score})
    run, metrics = select_best(list(tmp_path.iterdir()))
    assert run.name == "a" * 40 and metrics["primary"] == 0.9


def test_cli_grid_probe_evaluate(isolated_cache, tmp_path, capsys):
    original_test_dataset()
    blobs_dataset(n=(120, 40, 40))
    assert main(["grid-config", "test", "test", "--grid", "demo"]) == 0
    assert len(list((isolated_cache / "probes" / "test" / "test").glob("*.json"))) == 12
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(
        json.dumps({"dataset": "test", "representation": "test", "max_num_epochs": 5, "learning_rate": 0.05})
    )
    assert (
        main(
            [
                "probe",
                "test",
                "test",
                "--config",
                str(cfg_file),
                "--no-progress",
                "--device",
                "cpu",
                "--precision",
                "bf16",
            ]
        )
        == 0
    )
    run = isolated_cache / "probes" / "test" / "test" / ProbeConfig(json.loads(cfg_file.read_text())).uid()
    assert json.loads((run / "train.json").read_text())["precision"] == "bf16"
    assert main(["probe", "gtzan_ff", "blobs", "--config", str(cfg_file), "--no-progress"]) == 2  # wrong pair
    blob_cfg = tmp_path / "blob.json"
    blob_cfg.write_text(json.dumps({"dataset": "gtzan_ff", "representation": "blobs", "max_num_epochs": 20}))
    assert main(["probe", "gtzan_ff", "blobs", "--config", str(blob_cfg), "--no-progress", "--serial"]) == 0
    out = tmp_path / "results.json"
    capsys.readouterr()
    assert main(["evaluate", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| representation | gtzan_ff accuracy | test accuracy |" in table
    rows = json.loads(out.read_text())
    assert [(r["dataset"], r["representation"]) for r in rows] == [("gtzan_ff", "blobs"), ("test", "test")]
    assert rows[1]["test"]["accuracy"] == 1.0 and rows[1]["num_runs"] == 1 and len(rows[1]["best_uid"]) == 40
    assert results_table(rows) in table
    assert evaluate(["test"], split="valid")[0]["valid"] == rows[1]["valid"]
