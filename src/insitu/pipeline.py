"""Pipelined training: the weight staleness of a layer pipeline, emulated exactly.

Both headline speed-ups of the papers assume a pipeline: Gokmen & Vlasov 2016 (the ~30,000x of
an RPU accelerator) and Dey et al. 2017 (edge processing, 35x) let the forward, backward and
update of *different* examples run at once in different layers. A layer then computes the
forward pass of an example with weights that have not yet received the updates of the examples
ahead of it, and the accuracy cost of that staleness is part of the claim (issue 18).

**The pipeline this module emulates** (our model; the papers do not spell one out). ``L`` weight
layers; one forward stage and one backward stage per layer, one example per stage and cycle; the
last layer's backward stage directly follows its forward stage; a layer applies the update of an
example in the cycle of its backward stage, after reading its weights for that backward pass.
Example ``t`` is then in layer ``l``'s forward stage at cycle ``t + l − 1`` and in its backward
stage at ``t + 2L − l``. Counting which updates a layer has received by each of those cycles:

* the **forward** pass of layer ``l`` for example ``t`` lacks the updates of the last
  ``d_l = 2 (L − l) + 1`` examples (``L − l`` layers up and down again, and the example just
  ahead of it): the weights after example ``t − d_l − 1`` (the initial weights while the pipeline
  fills);
* the **backward** pass through layer ``l`` and its **update** see every update up to example
  ``t − 1``, as in ordinary sequential training.

For the 784-256-128-10 network (``L = 3``) the delays are 5, 3 and 1 examples.
:class:`PipelineStaleness` reproduces exactly this in an ordinary sequential training loop:
before layer ``l``'s forward it swaps in the weights of ``d_l`` updates ago (kept in a ring of
snapshots), and swaps the current ones back right after, so that autograd's backward pass and
the pulsed update run on the current weights with the stale forward's activations. Other
pipelines (other delays per layer) are the same class with other ``delays``.

Delays count optimizer steps: at batch 1 (the papers' setting) one step is one example.
"""

from __future__ import annotations

from collections import deque
from typing import Sequence

import torch
from torch import nn

from .config import ConfigError

__all__ = ["PipelineStaleness", "pipeline_delays", "weight_layers"]


def pipeline_delays(layers: int) -> list[int]:
    """The forward-pass delay of each of ``layers`` weight layers, first to last:
    ``d_l = 2 (L − l) + 1`` (module docstring)."""
    return [2 * (layers - l) + 1 for l in range(1, layers + 1)]


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The layers with weights of ``model``, in the order they were registered (the forward order
    of a ``Sequential``): analog and digital linear and convolutional layers, and the pre-defined
    sparse junctions of Dey et al. (:class:`insitu.sparse.linear.SparseLinear`)."""
    from .nn import AnalogConv1d, AnalogConv2d, AnalogLinear
    from .sparse.linear import SparseLinear

    kinds = (AnalogLinear, AnalogConv1d, AnalogConv2d, SparseLinear, nn.Linear, nn.Conv1d, nn.Conv2d)
    return [m for m in model.modules() if isinstance(m, kinds)]


class PipelineStaleness:
    """Run the forward pass of each of ``layers`` with its weights of ``delays[l]`` optimizer
    steps ago; call :meth:`step` after every optimizer step.

    Args:
        layers: the weight layers, in pipeline order (:func:`weight_layers`).
        delays: per layer, how many of the latest updates its forward pass lacks
            (:func:`pipeline_delays` for the pipeline of the module docstring).

    What is swapped is every parameter of a layer (an analog layer's array, bias column included,
    and a digital bias; a digital layer's weight and bias). Learning-rule cells keep state beyond
    the array (a second array, buffers), and replicas stack several networks: both are refused.
    The snapshots are part of :meth:`state_dict`, so a resumed run continues bit for bit.
    """

    def __init__(self, layers: Sequence[nn.Module], delays: Sequence[int]):
        from .replicas import ReplicatedTile
        from .tile import AnalogTile

        self.layers = list(layers)
        self.delays = [int(d) for d in delays]
        if len(self.layers) != len(self.delays) or not self.layers:
            raise ConfigError(f"PipelineStaleness: {len(self.layers)} layers and {len(self.delays)} delays; give one delay per layer.")
        if any(d < 0 for d in self.delays):
            raise ConfigError(f"PipelineStaleness: delays must be >= 0 updates, got {self.delays}.")
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, ReplicatedTile):
                    raise ConfigError("Pipelined training of replicas in lockstep is not available; train the points one by one.")
                if isinstance(module, AnalogTile) and module.cell is not None:
                    raise ConfigError(
                        f"Pipelined training with a learning-rule cell ({type(module.cell.config).__name__}) is not available: "
                        "the cell's state beyond the array would need its own staleness model."
                    )
        self.params = [[p for p in layer.parameters()] for layer in self.layers]
        # history[l]: the layer's parameters after the last delays[l] + 1 steps, oldest first.
        self.history = [deque([self._snapshot(ps)], maxlen=d + 1) for ps, d in zip(self.params, self.delays)]
        self._current: list = [None] * len(self.layers)
        self._handles = []
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._swap_in(index)))
            self._handles.append(layer.register_forward_hook(self._swap_back(index)))

    @staticmethod
    def _snapshot(params) -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    def _swap_in(self, index: int):
        def hook(module, inputs):
            if not module.training or self.delays[index] == 0:
                return None  # evaluation reads the current weights
            params = self.params[index]
            self._current[index] = [p.data for p in params]
            for p, old in zip(params, self.history[index][0]):
                p.data = old
            return None

        return hook

    def _swap_back(self, index: int):
        def hook(module, inputs, output):
            current = self._current[index]
            if current is not None:
                for p, now in zip(self.params[index], current):
                    p.data = now
                self._current[index] = None
            return None

        return hook

    def step(self) -> None:
        """Record the weights after an optimizer step (call it after every ``optimizer.step()``)."""
        for params, history in zip(self.params, self.history):
            history.append(self._snapshot(params))

    def remove(self) -> None:
        """Detach the hooks: the layers compute with their current weights again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict:
        return {"delays": list(self.delays), "history": [[list(s) for s in h] for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        if list(state["delays"]) != self.delays:
            raise ConfigError(f"The saved pipeline had delays {state['delays']}, this one {self.delays}.")
        for history, saved in zip(self.history, state["history"]):
            history.clear()
            history.extend([[t.clone() for t in snapshot] for snapshot in saved])
