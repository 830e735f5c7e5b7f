"""``AnalogSGD``: the optimizer whose ``step()`` triggers the in-place tile updates."""

from __future__ import annotations

import functools
from itertools import chain

import torch
from torch.optim import optimizer as _torch_optimizer
from torch.optim.optimizer import register_optimizer_step_pre_hook

from .update.fused import FusedPulseUpdate, can_fuse, fusion_key
from .update.kernels import select_backend

__all__ = ["AnalogSGD", "ForeignOptimizerError"]


def _hooked_step(step):
    """``step`` with what torch wraps around every optimizer's step (the global and per-optimizer
    pre- and post-hooks, ``_optimizer_step_code``), and the profiler's ``record_function`` label
    only while a profiler records. Torch enters that label at every step, profiler or not: two
    dispatched operations, about a tenth of a batch-1 step of the 2016 network, which this
    optimizer's step is otherwise free of (:class:`torch.optim.Optimizer` leaves a step marked
    ``hooked`` as it is)."""
    traced = torch.optim.Optimizer.profile_hook_step(step)
    pre_hooks = _torch_optimizer._global_optimizer_pre_hooks
    post_hooks = _torch_optimizer._global_optimizer_post_hooks

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if type(self).step is not wrapper:
            # Called through super() from a subclass's own step, which torch wraps with the
            # hooks and the label already.
            return step(self, *args, **kwargs)
        if torch._C._autograd._profiler_enabled():
            return traced(self, *args, **kwargs)
        for pre_hook in chain(pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise RuntimeError(f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}.")
                args, kwargs = result
        out = step(self, *args, **kwargs)
        self._optimizer_step_code()
        for post_hook in chain(self._optimizer_step_post_hooks.values(), post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True
    return wrapper


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
        fused: compute the sequential pulse updates of all tiles of a parameter group that share
            a pulse configuration and the number of pending samples (two or more such tiles) in
            one set of tensor operations
            (:class:`~insitu.update.fused.FusedPulseUpdate`; the same update in distribution, not
            draw for draw; 1.3x faster at batch 1 for the 2016 network). Tiles it does not cover
            keep their own update. All pulses of a fused group are drawn from the generator of
            its first tile. ``False`` updates every tile on its own.
    """

    def __init__(self, params, lr: float = 0.01, fused: bool = True):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"AnalogSGD: lr must be a positive number, got {lr!r}.")
        if not isinstance(fused, bool):
            raise ValueError(f"AnalogSGD: fused must be True or False, got {fused!r}.")
        super().__init__(params, {"lr": float(lr)})
        self.fused = fused
        self._fused_updates: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """:meth:`torch.optim.Optimizer.zero_grad` without its profiler label while no profiler
        records (the label costs more than the rest: analog weights have no ``.grad``)."""
        if torch._C._autograd._profiler_enabled():
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                if grad.grad_fn is not None:
                    grad.detach_()
                else:
                    grad.requires_grad_(False)
                grad.zero_()

    @_hooked_step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            lr = group["lr"]
            fusable: dict = {}
            for p in group["params"]:
                link = getattr(p, "_insitu_tile", None)
                tile = link() if link is not None else None
                if tile is not None:
                    # The compiled CPU kernel updates a tile in microseconds: fusing tiles pays
                    # only on the torch backend, whose cost is per tensor operation.
                    if self.fused and tile._pending and select_backend(p.device) == "torch" and _fusable(tile):
                        pending = tile._pending
                        rows = pending[0][0].shape[0] if len(pending) == 1 else sum(x.shape[0] for x, _ in pending)
                        fusable.setdefault(fusion_key(tile, rows), []).append(tile)
                    else:
                        tile.update(lr)
                elif p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
            for key, tiles in fusable.items():
                if len(tiles) == 1:  # alone (e.g. a convolution's many patches): its own loop is faster
                    tiles[0].update(lr)
                    continue
                # One cached update per set of tiles, whatever the number of pending samples.
                cache_key = (index, *map(id, tiles))
                cached = self._fused_updates.get(cache_key)
                if cached is None or not cached.current(tiles, lr):
                    cached = self._fused_updates[cache_key] = FusedPulseUpdate(tiles, lr)
                cached.apply()
        return loss


def _fusable(tile) -> bool:
    """:func:`can_fuse`, remembered on the tile until its config, connection mask or device
    parameters are replaced."""
    signature = (id(tile.config), id(getattr(tile, "connection_mask", None)), id(getattr(tile, "device_params", None)))
    memo = tile.__dict__.get("_fusable_memo")
    if memo is None or memo[0] != signature:
        memo = tile.__dict__["_fusable_memo"] = (signature, can_fuse(tile))
    return memo[1]


class ForeignOptimizerError(TypeError):
    """A torch optimizer other than :class:`AnalogSGD` was asked to step analog weights."""


def _refuse_foreign_optimizers(optimizer, args, kwargs):
    """Global step pre-hook: a plain torch optimizer (``SGD``, ``Adam``, ...) would leave analog
    weights unchanged (they never receive ``.grad``), so a training loop would run for hours and
    learn nothing in its analog layers. Refuse at its first ``step()`` instead."""
    if isinstance(optimizer, AnalogSGD):
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if getattr(p, "_insitu_tile", None) is not None:
                raise ForeignOptimizerError(
                    f"{type(optimizer).__name__} was given the weights of an analog tile "
                    f"(shape {tuple(p.shape)}); torch optimizers cannot train them: they receive no .grad, and "
                    "their update is the pulsed write the tile performs. Use insitu.optim.AnalogSGD "
                    "(AnalogSGD(model.parameters(), lr=...)), or give this optimizer only the digital parameters, "
                    "e.g. [p for p in model.parameters() if not hasattr(p, '_insitu_tile')]."
                )


# Registered once, when insitu is imported: it applies to every optimizer, including those built
# before (the hook is global) and those of other libraries; AnalogSGD and optimizers without analog
# parameters pass through at the cost of one attribute look-up per parameter and step.
register_optimizer_step_pre_hook(_refuse_foreign_optimizers)
