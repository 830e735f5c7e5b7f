"""``AnalogSGD``: the optimizer whose ``step()`` triggers the in-place tile updates."""

from __future__ import annotations

import torch

__all__ = ["AnalogSGD"]


class AnalogSGD(torch.optim.Optimizer):
    """Stochastic gradient descent for models with analog layers.

    Analog weights (those of an :class:`~insitu.tile.AnalogTile`) receive no ``.grad``: backward
    stashes ``x`` and ``δ`` on the tile, and ``step()`` asks the tile to update itself in place
    with the group's learning rate (pulses through the device model). Digital parameters (a
    digital bias, normalisation layers, ...) get the plain SGD update ``p -= lr * grad``.
    Learning-rate schedulers from ``torch.optim.lr_scheduler`` work as usual.

    Args:
        params: parameters or parameter groups, as for any torch optimizer
            (``model.parameters()``).
        lr: learning rate ``η``.
    """

    def __init__(self, params, lr: float = 0.01):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"AnalogSGD: lr must be a positive number, got {lr!r}.")
        super().__init__(params, {"lr": float(lr)})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                link = getattr(p, "_insitu_tile", None)
                tile = link() if link is not None else None
                if tile is not None:
                    tile.update(lr)
                elif p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        return loss
