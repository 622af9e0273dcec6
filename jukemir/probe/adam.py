"""Adam over the per-config parameter views of a stack of probes (:mod:`.stack`).

Every config of a stack is optimised as the original did (``torch.optim.Adam``
with coupled L2, torch's defaults: betas 0.9, 0.999; eps 1e-8), one parameter
group per (learning rate, weight decay). :class:`StackAdam` calls the fused
kernel that ``torch.optim.Adam(fused=True)`` calls (``torch._fused_adam_``),
with the same arguments, so its arithmetic is that optimizer's; what it leaves
out is the optimizer's per-update Python, which costs more than the kernels for
stacks of small probes.

The kernel is private to torch, so it is used only where it is checked and
with a way out: :func:`fused_adam_works` first runs it on the device and
compares two updates with ``torch.optim.Adam``'s; where that fails, or where
the kernel raises any error later, the stack (and every later one on that
device) is updated by :class:`PublicAdam` instead, ``torch.optim.Adam`` itself,
carrying the moments and step count, and a warning says so once per process.
The two agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import warnings

import torch

# torch.optim.Adam's defaults, as the original used them (docs/probes.md), in the fused kernel's terms
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "amsgrad": False, "maximize": False}

_fused_ok: dict = {}  # device -> whether the fused kernel is used there (checked once, False after a failure)
_warned = False


def _fused_adam(*args, **kwargs):
    """The private kernel (looked up at each call, so that a torch without it fails here)."""
    return torch._fused_adam_(*args, **kwargs)


def _fall_back(device: torch.device, exc: BaseException) -> None:
    """Stop using the fused kernel on ``device``, warning once per process."""
    global _warned
    _fused_ok[device] = False
    if not _warned:
        _warned = True
        warnings.warn(
            f"jukemir probe: torch's private fused Adam kernel failed on {device} ({type(exc).__name__}: "
            f"{str(exc)[:200]}); using torch.optim.Adam instead (the same updates up to float32 rounding)",
            RuntimeWarning,
            stacklevel=3,
        )


def fused_adam_works(device: torch.device) -> bool:
    """Whether ``torch._fused_adam_`` runs on ``device`` and does Adam's update (checked once per device).

    Two updates of a 3-element tensor with weight decay are compared with
    ``torch.optim.Adam``'s (relative 1e-5): a kernel that is missing, refuses
    its arguments or computes something else is not used.
    """
    device = torch.device(device)
    if device not in _fused_ok:
        try:
            ours = torch.linspace(-1.0, 1.0, 3, device=device)
            ref = ours.clone().requires_grad_()
            m, v, step = torch.zeros_like(ours), torch.zeros_like(ours), torch.zeros((), device=device)
            opt = torch.optim.Adam([ref], lr=1e-2, weight_decay=0.1)
            for grad in (torch.tensor([0.5, -2.0, 1e-3]), torch.tensor([-1.0, 3.0, 0.0])):
                grad = grad.to(device)
                step += 1
                _fused_adam([ours], [grad], [m], [v], [], [step], lr=1e-2, weight_decay=0.1, **ADAM)
                ref.grad = grad.clone()
                opt.step()
            ok = bool(torch.allclose(ours, ref.detach(), rtol=1e-5, atol=1e-8))
            if not ok:
                raise ArithmeticError(f"two updates gave {ours.tolist()}, torch.optim.Adam {ref.tolist()}")
            _fused_ok[device] = True
        except Exception as exc:  # noqa: BLE001 - any failure of a private kernel means: do not use it
            _fall_back(device, exc)
    return _fused_ok[device]


def _public_state(state: dict) -> dict:
    """A parameter's Adam state as ``torch.optim.Adam`` keeps it (its own step counter, on the CPU)."""
    return {
        "step": torch.tensor(float(state["step"]), dtype=torch.float32),
        "exp_avg": state["exp_avg"],
        "exp_avg_sq": state["exp_avg_sq"],
    }


class PublicAdam:
    """``torch.optim.Adam``, one per (learning rate, weight decay), over per-config parameter views.

    ``param_groups``: ``{(lr, weight_decay): [parameters]}``; ``old``: ``(parameter,
    state)`` pairs whose moments and step count carry over. ``state`` maps each
    parameter to ``{"step", "exp_avg", "exp_avg_sq"}``.
    """

    def __init__(self, param_groups: dict, old=None):
        carried = dict(old or [])
        self.optimizers = []
        for (lr, wd), params in param_groups.items():
            opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
            for p in params:
                if p in carried:
                    opt.state[p] = _public_state(carried[p])
            self.optimizers.append(opt)

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, first: int = 0) -> None:
        """One update of every parameter group from the ``first``-th (in the order of ``param_groups``)."""
        for opt in self.optimizers[first:]:
            opt.step()


class StackAdam:
    """Adam over per-config parameter views with torch's fused kernel (see the module docstring).

    ``param_groups``: ``{(lr, weight_decay): [parameters]}``, each parameter's
    ``.grad`` already bound (read at each step); ``old``: ``(parameter, state)``
    pairs whose moments and step count carry over. All configs of a stack have
    taken the same number of updates, so they share one step counter.
    ``state`` maps each parameter to ``{"step", "exp_avg", "exp_avg_sq"}`` as
    torch's Adam does.
    """

    def __init__(self, param_groups: dict, old=None):
        carried = dict(old or [])
        steps = {float(state["step"]) for state in carried.values()}
        if len(steps) > 1:
            raise ValueError(f"configs of one stack at different steps: {sorted(steps)}")
        first = next(iter(param_groups.values()))[0]
        self.device = first.device
        self.step_count = torch.tensor(
            steps.pop() if steps else 0.0, dtype=torch.float32, device=first.device
        )
        self._state: dict = {}
        self.fallback: PublicAdam | None = None
        self.param_groups = []
        for (lr, wd), params in param_groups.items():
            m, v = [], []
            for p in params:
                old_state = carried.get(p)
                m.append(old_state["exp_avg"] if old_state else torch.zeros_like(p))
                v.append(old_state["exp_avg_sq"] if old_state else torch.zeros_like(p))
                self._state[p] = {"step": self.step_count, "exp_avg": m[-1], "exp_avg_sq": v[-1]}
            self.param_groups.append(
                (lr, wd, params, [p.grad for p in params], m, v, [self.step_count] * len(params))
            )

    @property
    def state(self) -> dict:
        return self.fallback.state if self.fallback is not None else self._state

    def step(self) -> None:
        if self.fallback is not None:
            self.fallback.step()
            return
        self.step_count += 1
        for k, (lr, wd, params, grads, m, v, steps) in enumerate(self.param_groups):
            try:
                _fused_adam(params, grads, m, v, [], steps, lr=lr, weight_decay=wd, **ADAM)
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                self._fail_over(exc, k)
                return

    def _fail_over(self, exc: BaseException, k: int) -> None:
        """Continue with :class:`PublicAdam`: param_parameter groups before ``k`` took this update, the others
        take it there.

        A fused call that raises has written nothing (torch's kernels check
        their arguments before they write), so parameter group ``k`` is updated again.
        """
        _fall_back(self.device, exc)
        done = float(self.step_count)
        old = []
        for j, (_lr, _wd, params, _, m, v, _) in enumerate(self.param_groups):
            step = done if j < k else done - 1
            old += [(p, {"step": step, "exp_avg": m_, "exp_avg_sq": v_}) for p, m_, v_ in zip(params, m, v)]
        self.fallback = PublicAdam({(lr, wd): params for lr, wd, params, *_ in self.param_groups}, old)
        self.fallback.step(first=k)


def make_adam(views: list[list[torch.Tensor]], cfgs: list, old=None):
    """Adam over per-config parameter views (each config's ``.grad`` bound), one parameter group per
    (lr, weight decay): :class:`StackAdam` where :func:`fused_adam_works` on the device, else
    :class:`PublicAdam`.

    ``old``: ``(parameter, state)`` pairs of the previous optimizer of a stack
    (after configs left it), whose moments and step count carry over.
    """
    param_groups: dict = {}
    for params, cfg in zip(views, cfgs):
        key = (cfg["learning_rate"], cfg["l2_weight_decay"] or 0)
        param_groups.setdefault(key, []).extend(params)
    if fused_adam_works(views[0][0].device):
        return StackAdam(param_groups, old)
    return PublicAdam(param_groups, old)
