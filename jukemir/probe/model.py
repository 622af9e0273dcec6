"""The probe: a linear layer or a small MLP on top of frozen features (docs/probes.md)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SimpleMLP(nn.Module):
    """``dropout -> [Linear -> ReLU -> dropout] * k -> Linear``.

    Args:
        num_features: input size ``D``.
        hidden_layer_sizes: ``[]`` for a linear probe, ``[512]`` for one hidden layer.
        num_outputs: output size (logits, or regression outputs).
        dropout_input: apply dropout to the input. The original ignored this
            flag and always did; ``True`` (the default) keeps that behaviour.
        dropout_p: dropout probability, on the input and after each hidden ReLU.

    Layers are created in the original's order (``hidden_0 .. hidden_{k-1}``,
    ``output``, then the shared ``dropout``) so that ``torch.manual_seed(seed)``
    followed by construction gives the original's initial weights.

    ``forward(x)``: ``x`` of shape ``(N, D)`` float32 -> ``(N, num_outputs)``.
    """

    def __init__(self, num_features, hidden_layer_sizes, num_outputs, dropout_input=True, dropout_p=0.5):
        super().__init__()
        d = num_features
        self.num_layers = len(hidden_layer_sizes)
        for i, width in enumerate(hidden_layer_sizes):
            setattr(self, f"hidden_{i}", nn.Linear(d, width))
            d = width
        self.output = nn.Linear(d, num_outputs)
        self.dropout = nn.Dropout(p=dropout_p)
        self.dropout_input = dropout_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout_input:
            x = self.dropout(x)
        for i in range(self.num_layers):
            x = self.dropout(F.relu(getattr(self, f"hidden_{i}")(x)))
        return self.output(x)


def initial_state(num_features: int, hidden_layer_sizes, num_outputs: int, seed: int | None) -> dict:
    """The state_dict a run with ``seed`` starts from; a seeded call leaves the global torch RNG alone.

    Equal to seeding with ``torch.manual_seed(seed)`` and building
    :class:`SimpleMLP`, as the original's training does.
    """
    if seed is None:  # unseeded, as the original: draw from the global RNG
        return SimpleMLP(num_features, hidden_layer_sizes, num_outputs).state_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SimpleMLP(num_features, hidden_layer_sizes, num_outputs).state_dict()
