"""Training many configs at once, as stacked tensors (``jukemir probe``'s default trainer).

Configs sharing an architecture, batch size and seed (:func:`stack_key`) are
one stack: trained together as stacked tensors (batched matrix products), each
with its own learning rate, weight decay, dropout and standardisation, and each
stopping on its own; a stopped config is frozen and dropped from the stack.
Within a stack the original draws the same minibatches and the same dropout
noise for every config (same seed, same RNG calls), so the stacked trainer
shares them too: it draws the same minibatches and initial weights as the
original, and its dropout masks come from its own generator (the same
distribution, not the same numbers). The backward pass is written out by hand
(:meth:`_Stack.train_step`) and Adam is :mod:`.adam`'s.

``precision="bf16"`` computes the first-layer products in bfloat16 (float32
accumulation, master weights and Adam); on CPU a stack is then split into
smaller stacks (:func:`split_stack`) that stay in the caches.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Callable, Sequence

import torch

from ..device import cpu_threads_for, torch_device
from ..errors import UserError
from .adam import make_adam
from .config import ProbeConfig
from .data import ProbeData
from .metrics import compute_metrics, loss_gradient
from .model import SimpleMLP, initial_state
from .run import Probe
from .scaler import Scaler
from .serial import check_termination, macs_per_update, run_info, validation_score

# Arithmetic of the stacked trainer's first-layer products (the bulk of the work): "fp32" as the
# original; "bf16": bfloat16 inputs and weights with float32 accumulation, master weights, Adam state
# and everything after the first product (tensor cores on GPUs, AMX on recent Xeons).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Largest stack trained at once on a CPU in bf16 (in parameters). The bf16 copies of a stack's
# first-layer weights and gradients are made every step; for more than a few 4,800 x 512 MLPs they no
# longer stay in the CPU's caches and the copies cost more than the batching saves (measured: 4.6 vs
# 6.5 ms per config and update at batch 64). fp32 stacks and GPU stacks are not split.
CPU_STACK_PARAMS = 8_000_000


def stack_key(cfg) -> tuple:
    """Configs with the same key share initial weights, minibatches and dropout noise, and are one stack."""
    return (tuple(cfg["hidden_layer_sizes"]), cfg["batch_size"], cfg["seed"])


def plan_stacks(cfgs: Sequence) -> list[list[int]]:
    """Indices of ``cfgs`` by :func:`stack_key`, one list per stack, in first-seen order."""
    stacks: dict = {}
    for i, cfg in enumerate(cfgs):
        stacks.setdefault(stack_key(cfg), []).append(i)
    return list(stacks.values())


class _Features:
    """Feature matrices per (standardise?, split) on the device, built once and shared by all stacks."""

    def __init__(self, data: ProbeData, device: torch.device):
        self.data, self.device = data, device
        self.scalers: dict = {}
        self._X: dict = {}

    def scaler(self, standardize: bool) -> Scaler:
        if standardize not in self.scalers:
            self.scalers[standardize] = Scaler.fit(self.data.X["train"], standardize)
        return self.scalers[standardize]

    def X(self, standardize: bool, split: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (standardize, split, dtype)
        if key not in self._X:
            if dtype != torch.float32:
                self._X[key] = self.X(standardize, split).to(dtype)
            else:
                raw = self.data.X[split]
                X = self.scaler(True).transform(raw) if standardize else raw
                self._X[key] = torch.as_tensor(X, device=self.device)
        return self._X[key]


class _Stack:
    """Configs sharing :func:`stack_key`, trained as one stack of probes.

    Stack tensors: ``W[l]`` ``(C, d_l, d_{l+1})`` (a Linear's weight,
    transposed) and ``b[l]`` ``(C, d_{l+1})``. Configs are ordered by input
    variant (standardised?, input dropout) so each variant is a contiguous
    block whose first layer is one broadcast matrix product.
    """

    def __init__(
        self, cfgs: list, data: ProbeData, feats: _Features, device: torch.device, precision: str = "fp32"
    ):
        self.cfgs = cfgs
        self.uids = [cfg.uid() for cfg in cfgs]
        self.precision = precision
        self.cdtype = PRECISIONS[precision]
        self.data, self.feats, self.device = data, feats, device
        first = cfgs[0]
        self.hidden = list(first["hidden_layer_sizes"])
        self.batch_size, self.seed = first["batch_size"], first["seed"]
        self.spec = data.spec
        self.n_train = data.X["train"].shape[0]
        self.train_rows = torch.as_tensor(data.order("train", self.seed), device=device)
        self.y_train = torch.as_tensor(data.targets["train"], device=device)
        self.p_in = [c["dropout_p"] if c["dropout_input"] else 0.0 for c in cfgs]
        self.p_hidden = [c["dropout_p"] for c in cfgs]
        init = initial_state(data.num_features, self.hidden, self.spec.num_outputs, self.seed)
        names = [f"hidden_{i}" for i in range(len(self.hidden))] + ["output"]
        self.layer_names = names
        order = sorted(range(len(cfgs)), key=lambda i: (cfgs[i]["data_standardization"], self.p_in[i]))
        self.ids = order  # config index at each stack position
        C = len(order)
        self.W = [init[f"{n}.weight"].t().contiguous().to(device).unsqueeze(0).repeat(C, 1, 1) for n in names]
        self.b = [init[f"{n}.bias"].to(device).unsqueeze(0).repeat(C, 1) for n in names]
        self.best_W = [torch.empty_like(w) for w in self.W]
        self.best_b = [torch.empty_like(b) for b in self.b]
        self.best = [float("-inf")] * len(cfgs)
        self.boredom = [0] * len(cfgs)
        self.best_step: list = [None] * len(cfgs)
        self.curve: list = [[] for _ in cfgs]  # [step, validation score] per evaluation, per config
        self._bind()
        self.opt = make_adam(self.views, [cfgs[i] for i in self.ids])

    # -- stack bookkeeping
    def _bind(self):
        """(Re)create gradient buffers, per-config views, variant blocks and dropout indices."""
        self.gW = [torch.empty_like(w) for w in self.W]
        # the first layer's gradient as computed, when that is not float32 (then copied into gW[0]), and the
        # weights as multiplied (kept between steps, so that no large buffer is allocated per step)
        low = self.cdtype != torch.float32
        self.gW0 = torch.empty_like(self.W[0], dtype=self.cdtype) if low else None
        self.W0c = torch.empty_like(self.W[0], dtype=self.cdtype) if low else None
        self.W0c_current = False
        self.gb = [torch.empty_like(b) for b in self.b]
        self.views = []
        for pos in range(len(self.ids)):
            params = []
            for layer in range(len(self.W)):
                for p, g in (
                    (self.W[layer][pos], self.gW[layer][pos]),
                    (self.b[layer][pos], self.gb[layer][pos]),
                ):
                    p.grad = g
                    params.append(p)
            self.views.append(params)
        self.blocks = []
        for pos, i in enumerate(self.ids):
            variant = (self.cfgs[i]["data_standardization"], self.p_in[i])
            if self.blocks and self.blocks[-1][0] == variant:
                self.blocks[-1][2] = pos + 1
            else:
                self.blocks.append([variant, pos, pos + 1])
        ps = sorted({self.p_hidden[i] for i in self.ids})
        self.hidden_ps = ps
        self.hidden_p_index = torch.as_tensor(
            [ps.index(self.p_hidden[i]) for i in self.ids], device=self.device
        )

    def _compact(self, keep_pos: list[int]):
        """Drop finished configs from the stack, carrying the optimizer state of the others."""
        if not keep_pos:
            self.ids = []
            return
        idx = torch.as_tensor(keep_pos, device=self.device, dtype=torch.long)
        old_views, old_state = self.views, self.opt.state
        carried = [old_views[p] for p in keep_pos]
        for name in ("W", "b", "best_W", "best_b"):
            setattr(self, name, [t.index_select(0, idx) for t in getattr(self, name)])
        self.ids = [self.ids[p] for p in keep_pos]
        self._bind()
        pairs = [
            (new, old_state[old])
            for new_p, old_p in zip(self.views, carried)
            for new, old in zip(new_p, old_p)
            if old in old_state
        ]
        self.opt = make_adam(self.views, [self.cfgs[i] for i in self.ids], old=pairs)

    # -- forward passes
    def _first_weights(self) -> torch.Tensor:
        """The first layer's weights in the products' dtype (cast once per update)."""
        if self.W0c is None:
            return self.W[0]
        if not self.W0c_current:
            self.W0c.copy_(self.W[0])
            self.W0c_current = True
        return self.W0c

    def _forward_rest(self, Z, masks=None, rows=slice(None)):
        """The layers after the first product ``Z`` of the stack positions ``rows``: (pre-activations,
        activations, output)."""
        pre, acts = [Z], []
        for layer in range(1, len(self.W)):
            A = torch.relu(Z)
            if masks is not None and masks[layer - 1] is not None:
                A = A * masks[layer - 1]
            acts.append(A)
            Z = torch.baddbmm(self.b[layer][rows].unsqueeze(1), A, self.W[layer][rows])
            pre.append(Z)
        return pre, acts, Z

    def logits(self, split: str) -> torch.Tensor:
        """Eval-mode outputs ``(C, N, K)`` of the stack (no dropout) on ``split``."""
        out = []
        n = self.data.X[split].shape[0]
        width = max([self.spec.num_outputs, *self.hidden])
        chunk = max(1, (1 << 25) // max(1, n * width))
        W0 = self._first_weights()
        for (standardize, _), start, end in self.blocks:
            X = self.feats.X(standardize, split, self.cdtype)
            for s in range(start, end, chunk):
                e = min(end, s + chunk)
                Z = torch.matmul(X, W0[s:e]).float() + self.b[0][s:e].unsqueeze(1)
                out.append(self._forward_rest(Z, rows=slice(s, e))[2])
        return torch.cat(out)

    def train_step(self, rows: torch.Tensor, gen: torch.Generator):
        """One Adam update of every config in the stack on the minibatch ``rows``."""
        B, D = rows.shape[0], self.data.num_features
        X = {s: self.feats.X(s, "train").index_select(0, rows) for s in {v[0] for v, _, _ in self.blocks}}
        # Noise is drawn whether or not this stack uses it, so that what a config sees does not depend on
        # which configs share its stack (a resumed grid trains the unfinished ones without the others).
        in_noise = torch.rand((B, D), generator=gen, device=self.device)
        inputs = []
        for (standardize, p), _start, _end in self.blocks:
            x = X[standardize]
            if p > 0:
                x = x * ((in_noise >= p).to(x.dtype) * (1.0 / (1.0 - p)))
            inputs.append(x.to(self.cdtype))
        C = len(self.ids)
        W0 = self._first_weights()
        Z0 = torch.empty((C, B, W0.shape[2]), device=self.device, dtype=self.cdtype)
        for x, (_, start, end) in zip(inputs, self.blocks):
            torch.matmul(x, W0[start:end], out=Z0[start:end])
        Z0 = Z0.float()  # the same tensor when the products are float32
        Z0 += self.b[0].unsqueeze(1)
        masks = []
        for width in self.hidden:
            noise = torch.rand((B, width), generator=gen, device=self.device)
            if self.hidden_ps == [0.0]:
                masks.append(None)
                continue
            by_p = torch.stack([(noise >= p).to(noise.dtype) * (1.0 / (1.0 - p)) for p in self.hidden_ps])
            masks.append(by_p.index_select(0, self.hidden_p_index))
        pre, acts, out = self._forward_rest(Z0, masks)
        dZ = loss_gradient(self.spec.task, out, self.y_train.index_select(0, rows))
        for layer in range(len(self.W) - 1, 0, -1):
            A = acts[layer - 1]
            torch.bmm(A.transpose(1, 2), dZ, out=self.gW[layer])
            torch.sum(dZ, 1, out=self.gb[layer])
            dA = torch.bmm(dZ, self.W[layer].transpose(1, 2))
            if masks[layer - 1] is not None:
                dA = dA * masks[layer - 1]
            dZ = dA * (pre[layer - 1] > 0)
        gW0 = self.gW[0] if self.gW0 is None else self.gW0
        dZc = dZ.to(self.cdtype)
        for x, (_, start, end) in zip(inputs, self.blocks):
            torch.matmul(x.t(), dZc[start:end], out=gW0[start:end])
        if self.gW0 is not None:
            self.gW[0].copy_(gW0)
        torch.sum(dZ, 1, out=self.gb[0])
        self.opt.step()
        self.W0c_current = False

    # -- the loop
    def state_dict(self, pos: int, best: bool) -> dict:
        W, b = (self.best_W, self.best_b) if best else (self.W, self.b)
        state = {}
        for layer, name in enumerate(self.layer_names):
            state[f"{name}.weight"] = W[layer][pos].t().contiguous().cpu()
            state[f"{name}.bias"] = b[layer][pos].clone().cpu()
        return state

    def run(self, on_finish: Callable, progress=None):
        """Train until every config has stopped; ``on_finish(index, state_dict, info)`` for each."""
        start = time.time()
        cfgs = self.cfgs
        rng = random.Random(self.seed) if self.seed is not None else random.Random()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed if self.seed is not None else random.getrandbits(63))
        metric_names = sorted({cfgs[i]["early_stopping_metric"].lstrip("-") for i in self.ids})
        where = f"{self.data.dataset}/{self.data.representation}"
        k = min(self.batch_size, self.n_train)
        step = 0
        while self.ids:
            epoch = step * self.batch_size / self.n_train
            finished = {}  # position -> (stopped_by, restore best)
            due = []
            for pos, i in enumerate(self.ids):
                cfg = cfgs[i]
                if cfg["max_num_epochs"] is not None and epoch > cfg["max_num_epochs"]:
                    finished[pos] = ("max_num_epochs", False)
                elif cfg["early_stopping"] and step % cfg["early_stopping_eval_frequency"] == 0:
                    if self.boredom[i] >= cfg["early_stopping_boredom"]:
                        finished[pos] = ("early_stopping", self.best_step[i] is not None)
                    else:
                        due.append(pos)
            if due:
                with torch.no_grad():
                    logits = self.logits("valid")
                metrics = compute_metrics(
                    self.spec, logits, self.data.targets["valid"], self.data.uids["valid"], names=metric_names
                )
                improved = []
                for pos in due:
                    i = self.ids[pos]
                    score = validation_score(
                        cfgs[i],
                        {k_: v[pos] for k_, v in metrics.items()},
                        f"{where} {self.uids[i]} step {step}",
                    )
                    self.curve[i].append([step, score])
                    if score > self.best[i]:
                        self.best[i], self.boredom[i], self.best_step[i] = score, 0, step
                        improved.append(pos)
                    else:
                        self.boredom[i] += 1
                if improved:
                    idx = torch.as_tensor(improved, device=self.device)
                    for src, dst in ((self.W, self.best_W), (self.b, self.best_b)):
                        for s_, d_ in zip(src, dst):
                            d_.index_copy_(0, idx, s_.index_select(0, idx))
            if finished:
                for pos, (stopped_by, restore) in finished.items():
                    i = self.ids[pos]
                    info = run_info(
                        "vectorised",
                        self.device,
                        step,
                        self.best_step[i],
                        self.best[i],
                        stopped_by,
                        time.time() - start,
                        stack_size=len(cfgs),
                        precision=self.precision,
                        valid_curve=self.curve[i],
                    )
                    on_finish(i, self.state_dict(pos, best=restore), info)
                    if progress is not None:
                        progress.update(1)
                self._compact([p for p in range(len(self.ids)) if p not in finished])
                if not self.ids:
                    break
            rows = self.train_rows.index_select(
                0, torch.as_tensor(rng.sample(range(self.n_train), k), device=self.device)
            )
            with torch.no_grad():
                self.train_step(rows, gen)
            step += 1
            if progress is not None and step % 256 == 0:
                progress.set_postfix(step=step, training=len(self.ids), refresh=False)


def split_stack(members: list, data: ProbeData, device: torch.device, precision: str) -> list[list[int]]:
    """Indices of a stack's ``members`` in smaller stacks of at most :data:`CPU_STACK_PARAMS` parameters
    (bf16 on CPU only; otherwise the whole stack).

    The split changes nothing a config sees: the smaller stacks draw the same
    minibatches and dropout noise as the whole one (see :meth:`_Stack.train_step`).
    """
    n = len(members)
    if device.type != "cpu" or precision == "fp32" or n <= 1:
        return [list(range(n))]
    sizes = [data.num_features, *members[0]["hidden_layer_sizes"], data.spec.num_outputs]
    params = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    k = max(1, CPU_STACK_PARAMS // params)
    return [list(range(s, min(n, s + k))) for s in range(0, n, k)]


def train_probes(
    cfgs: Sequence,
    data: ProbeData,
    device=None,
    progress: bool = True,
    on_finish: Callable | None = None,
    precision: str = "fp32",
) -> list[Probe]:
    """Train many configs of one dataset x representation at once (see the module docstring).

    Args:
        cfgs: configs (dicts or :class:`ProbeConfig`), any mix of architectures,
            batch sizes and seeds; those sharing :func:`stack_key` are one stack.
        data: from :func:`~jukemir.probe.data.load_probe_data` (loaded once, kept on ``device``).
        device: torch device (default: cuda if available, else cpu).
        on_finish: called with each :class:`~jukemir.probe.run.Probe` as soon as it stops (to save it).
        precision: ``"fp32"`` (the original's arithmetic) or ``"bf16"``: the
            first layer's products (forward, weight gradient, validation) in
            bfloat16 with float32 accumulation; weights, Adam and the rest stay
            float32. Faster where bf16 has hardware support (GPU tensor
            cores; on an AMX CPU 1.5-2x for 4,800 x 512 MLP stacks), with
            statistically the same results (see benchmarks/probe_grid.py and
            the tests).

    Returns the trained probes in the order of ``cfgs``.
    """
    cfgs = [ProbeConfig(c) for c in cfgs]
    for cfg in cfgs:
        check_termination(cfg)
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    device = torch_device(device)
    feats = _Features(data, device)
    probes: list = [None] * len(cfgs)
    bar, own_bar = (progress, False) if not isinstance(progress, bool) else (None, progress)
    if own_bar:
        from tqdm import tqdm

        bar = tqdm(
            total=len(cfgs), desc=f"probe {data.dataset}/{data.representation}", unit="cfg", file=sys.stderr
        )
    try:
        for stack in plan_stacks(cfgs):
            members = [cfgs[i] for i in stack]

            def finish(j, state, info, stack=stack, members=members):
                cfg = members[j]
                model = SimpleMLP(
                    data.num_features,
                    cfg["hidden_layer_sizes"],
                    data.spec.num_outputs,
                    dropout_input=cfg["dropout_input"],
                    dropout_p=cfg["dropout_p"],
                )
                model.load_state_dict(state)
                probe = Probe(
                    cfg, data.spec, feats.scaler(cfg["data_standardization"]), model.to(device), info
                )
                probes[stack[j]] = probe
                if on_finish is not None:
                    on_finish(probe)

            for sub in split_stack(members, data, device, precision):
                with cpu_threads_for(device, len(sub) * macs_per_update(members[0], data)):
                    _Stack([members[j] for j in sub], data, feats, device, precision).run(
                        lambda j, state, info, sub=sub: finish(sub[j], state, info), progress=bar
                    )
    finally:
        if own_bar and bar is not None:
            bar.close()
    return probes
